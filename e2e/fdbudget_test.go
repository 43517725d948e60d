package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/passthrough"
)

// TestGuestCannotTakeEveryFd: a guest that opens a file over and over
// gets ENFILE once its budget is used, and the daemon, sharing this
// process's RLIMIT_NOFILE, keeps fds of its own: lookups still work and a
// ring restart (which dups the new kick fd) succeeds; after the guest
// releases, opening works again.
func TestGuestCannotTakeEveryFd(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "passthrough file handles need root")
	}
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = 1024
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &old)

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	fs, err := passthrough.New(dir, passthrough.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	dm := startDaemon(t, fs, 1, 0)
	g := connectGuest(t, dm, testdriver.QEMU, 1)
	c := g.client(1, testdriver.Layout{})
	g.init(c)
	e, err := c.Lookup(fuse.FUSE_ROOT_ID, "f")
	if err != nil {
		t.Fatal(err)
	}
	var fhs []uint64
	for {
		o, err := c.Open(e.NodeId, uint32(os.O_RDONLY))
		if errors.Is(err, syscall.ENFILE) {
			break
		}
		if err != nil {
			t.Fatalf("open %d: %v (before the budget ran out)", len(fhs), err)
		}
		fhs = append(fhs, o.Fh)
		if len(fhs) > 1024 {
			t.Fatal("no bound on open files")
		}
	}
	if _, err := c.GetAttr(e.NodeId); err != nil {
		t.Fatalf("getattr with the budget used: %v", err)
	}
	base, err := g.drv.StopQueue(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.drv.StartQueue(1, base); err != nil {
		t.Fatalf("ring restart with the budget used: %v", err)
	}
	if _, err := c.Lookup(fuse.FUSE_ROOT_ID, "f"); err != nil {
		t.Fatalf("lookup after the restart: %v", err)
	}
	for _, fh := range fhs {
		if err := c.Release(e.NodeId, fh); err != nil {
			t.Fatal(err)
		}
	}
	o, err := c.Open(e.NodeId, uint32(os.O_RDONLY))
	if err != nil {
		t.Fatalf("open after releasing: %v", err)
	}
	c.Release(e.NodeId, o.Fh)
	t.Logf("guest budget: %d open files under RLIMIT_NOFILE 1024", len(fhs))
	g.destroy(c)
}
