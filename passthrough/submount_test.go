package passthrough

import (
	"os"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// TestSubmounts: a tmpfs mounted inside the share is reached through its
// own mount fd for open_by_handle_at, and announced as a submount when
// asked.
func TestSubmounts(t *testing.T) {
	for _, announce := range []bool{false, true} {
		e := newEnv(t, Options{AnnounceSubmounts: announce, FdCacheSize: 1})
		os.Mkdir(e.host("sub"), 0o755)
		os.Mkdir(e.host("plain"), 0o755)
		if err := unix.Mount("tmpfs", e.host("sub"), "tmpfs", 0, "size=1m"); err != nil {
			testenv.Skipf(t, "cannot mount tmpfs: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(e.host("sub"), unix.MNT_DETACH) })
		os.WriteFile(e.host("sub", "f"), []byte("on tmpfs"), 0o644)
		sub := e.lookup(t, 1, "sub")
		if got := sub.Attr.Flags&fuse.ATTR_SUBMOUNT != 0; got != announce {
			t.Fatalf("announce %v: submount flag %v", announce, got)
		}
		if e.lookup(t, 1, "plain").Attr.Flags != 0 {
			t.Fatal("plain directory flagged")
		}
		f := e.lookup(t, sub.NodeId, "f")
		e.lookup(t, 1, "plain") // evict f's fd (cache of 1)
		var oo fuse.OpenOut
		if s := e.fs.Open(nil, &fuse.OpenIn{InHeader: hdr(f.NodeId), Flags: unix.O_RDONLY}, &oo); !s.Ok() {
			t.Fatalf("open on the submount after eviction: %v", s)
		}
		res, _ := e.fs.Read(nil, &fuse.ReadIn{Fh: oo.Fh, Size: 100}, nil)
		if b, _ := res.Bytes(make([]byte, 100)); string(b) != "on tmpfs" {
			t.Fatalf("read %q", b)
		}
		res.Done()
		e.fs.Release(nil, &fuse.ReleaseIn{Fh: oo.Fh})
		if e.lookup(t, sub.NodeId, "..").NodeId != 1 {
			t.Fatal(".. of the submount root is not the share")
		}
	}
}
