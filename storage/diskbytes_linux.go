package storage

import (
	"io/fs"
	"syscall"
)

// diskBytes is the space a file takes on disk (sparse files count only
// what is allocated).
func diskBytes(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}
