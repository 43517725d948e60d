package fuseclient

import (
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// FlushCounter serves a filesystem and counts the FLUSH requests a FUSE
// client (the kernel's, in tests that mount through /dev/fuse) sent it.
type FlushCounter struct {
	fuse.RawFileSystem
	N atomic.Int64
}

// CountFlushes wraps fs.
func CountFlushes(fs fuse.RawFileSystem) *FlushCounter { return &FlushCounter{RawFileSystem: fs} }

// Flush counts the request and passes it on.
func (c *FlushCounter) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	c.N.Add(1)
	return c.RawFileSystem.Flush(cancel, in)
}
