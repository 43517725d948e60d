package hostmount

import (
	"fmt"
	"os"
	"runtime/debug"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// MountOptions returns the go-fuse mount options for serving a RAFS
// filesystem on the host: read-only, direct mount(2) when root (no
// fusermount), kernel permission checks, and allow_other when root.
func MountOptions(debug bool) *fuse.MountOptions {
	root := os.Geteuid() == 0
	o := &fuse.MountOptions{
		FsName:       "rafs",
		Name:         "rafs",
		Debug:        debug,
		DirectMount:  root,
		AllowOther:   root,
		MaxReadAhead: 1 << 20,
		Options:      []string{"default_permissions"},
	}
	if root {
		o.DirectMountFlags = syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_RDONLY
	} else {
		o.Options = append(o.Options, "ro")
	}
	return o
}

// Mount mounts fs at mountpoint through /dev/fuse, starts serving it and
// waits until the mount is live. Unmount the returned server to stop.
func Mount(fs fuse.RawFileSystem, mountpoint string, opts *fuse.MountOptions) (*fuse.Server, error) {
	if opts == nil {
		opts = MountOptions(false)
	}
	srv, err := fuse.NewServer(faultContained{fs}, mountpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		srv.Unmount()
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	return srv, nil
}

// faultContained turns a memory fault in the filesystem (a bootstrap
// truncated under its mmap raises SIGBUS) into a panic that go-fuse
// recovers and answers with EIO, instead of the end of the process.
// debug.SetPanicOnFault is per goroutine and go-fuse starts its own serve
// goroutines, so every request that may touch image memory sets it first;
// the flag stays with the goroutine (as vhostuser's queue workers do).
type faultContained struct{ fuse.RawFileSystem }

func contain() { debug.SetPanicOnFault(true) }

func (f faultContained) Lookup(c <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	contain()
	return f.RawFileSystem.Lookup(c, h, name, out)
}

func (f faultContained) GetAttr(c <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	contain()
	return f.RawFileSystem.GetAttr(c, in, out)
}

func (f faultContained) Access(c <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	contain()
	return f.RawFileSystem.Access(c, in)
}

func (f faultContained) Readlink(c <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	contain()
	return f.RawFileSystem.Readlink(c, h)
}

func (f faultContained) GetXAttr(c <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	contain()
	return f.RawFileSystem.GetXAttr(c, h, attr, dest)
}

func (f faultContained) ListXAttr(c <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	contain()
	return f.RawFileSystem.ListXAttr(c, h, dest)
}

func (f faultContained) Open(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	contain()
	return f.RawFileSystem.Open(c, in, out)
}

func (f faultContained) Read(c <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	contain()
	return f.RawFileSystem.Read(c, in, buf)
}

func (f faultContained) Lseek(c <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	contain()
	return f.RawFileSystem.Lseek(c, in, out)
}

func (f faultContained) OpenDir(c <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	contain()
	return f.RawFileSystem.OpenDir(c, in, out)
}

func (f faultContained) ReadDir(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	contain()
	return f.RawFileSystem.ReadDir(c, in, out)
}

func (f faultContained) ReadDirPlus(c <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	contain()
	return f.RawFileSystem.ReadDirPlus(c, in, out)
}

func (f faultContained) StatFs(c <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	contain()
	return f.RawFileSystem.StatFs(c, h, out)
}
