package vfs

import (
	"sync/atomic"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// panickingFS is a fault injector: every Read panics, as a filesystem bug
// would (the transport recovers such panics and answers EIO).
type panickingFS struct{ fuse.RawFileSystem }

func (panickingFS) Read(<-chan struct{}, *fuse.ReadIn, []byte) (fuse.ReadResult, fuse.Status) {
	panic("injected fault")
}

// TestFaultInjectorReadPanicReleasesMount: a panic inside a mounted
// filesystem's Read must not leak the mount's reference, or unmounting
// never closes the filesystem.
func TestFaultInjectorReadPanicReleasesMount(t *testing.T) {
	v := New(Options{Logger: quiet()})
	var closed atomic.Int32
	fs := panickingFS{fuse.NewDefaultRawFileSystem()}
	if err := v.Mount("/", Mount{FS: fs, Type: "fault", Close: func() error { closed.Add(1); return nil }}); err != nil {
		t.Fatal(err)
	}
	in := &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: fuse.FUSE_ROOT_ID}, Size: 4096}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the injected panic did not reach the caller")
			}
		}()
		v.Read(make(chan struct{}), in, nil)
	}()
	if in.NodeId != fuse.FUSE_ROOT_ID {
		t.Errorf("node id left rewritten as %#x", in.NodeId)
	}
	if err := v.Umount("/"); err != nil {
		t.Fatal(err)
	}
	if n := closed.Load(); n != 1 {
		t.Fatalf("filesystem closed %d times after umount, want 1 (mount reference leaked)", n)
	}
}
