// Package pagecache sees and drops a file's pages in the host's page
// cache: the blob cache asks which chunks need reading ahead (InCore), and
// tests and benchmarks check what read-ahead brought in and start cold
// without dropping every cache on the machine (drop_caches).
//
// x/sys/unix has no mincore(2) for Linux, hence the raw system call.
package pagecache

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Drop writes back path's dirty pages and evicts its pages in
// [off, off+n) (n 0: to the end) from the page cache.
func Drop(path string, off, n int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := unix.Fadvise(int(f.Fd()), off, n, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("fadvise %s: %w", path, err)
	}
	return nil
}

// Resident reports, page by page, which of path's pages in [off, off+n)
// are in the page cache (mincore(2)). off must be page-aligned.
func Resident(path string, off, n int64) ([]bool, error) {
	if n <= 0 {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), off, int(n), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", path, err)
	}
	defer unix.Munmap(m)
	page := int64(os.Getpagesize())
	vec := make([]byte, (n+page-1)/page)
	if err := InCore(m, vec); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := make([]bool, len(vec))
	for i, v := range vec {
		out[i] = v&1 != 0
	}
	return out, nil
}

// InCore fills vec with one byte per page of the file mapping m (m starts
// on a page): bit 0 set when the page is in the page cache. It reads
// nothing and touches no page of m.
func InCore(m, vec []byte) error {
	if len(m) == 0 {
		return nil
	}
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)),
		uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return fmt.Errorf("mincore: %w", e)
	}
	return nil
}

// ResidentBytes is the bytes of path in the page cache.
func ResidentBytes(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	r, err := Resident(path, 0, st.Size())
	if err != nil {
		return 0, err
	}
	return int64(Count(r)) * int64(os.Getpagesize()), nil
}

// Count is the number of resident pages in r.
func Count(r []bool) (n int) {
	for _, b := range r {
		if b {
			n++
		}
	}
	return n
}
