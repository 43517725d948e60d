package passthrough

import (
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// FuzzLookupName feeds guest-chosen names to Lookup, Create, Mkdir and
// Unlink at the root and below a symlink to the outside: nothing may
// resolve to, or change, anything outside the shared directory.
func FuzzLookupName(f *testing.F) {
	for _, s := range []string{"", ".", "..", "/", "abs", "absdir", "up", "upfile", "procfd", "../outside",
		"d/../../outside", "/proc/self/root", "a\x00b", "secret", "x", "d"} {
		f.Add(s)
	}
	e := newEnv(f, Options{})
	e.symlinks(f)
	if err := syscall.Mkdir(e.host("d"), 0o755); err != nil {
		f.Fatal(err)
	}
	outsideIno := map[uint64]bool{
		mustStat(f, e.outside).Ino:                          true,
		mustStat(f, filepath.Join(e.outside, "secret")).Ino: true,
		mustStat(f, filepath.Dir(e.share)).Ino:              true,
	}
	absdir := e.lookup(f, 1, "absdir").NodeId
	d := e.lookup(f, 1, "d").NodeId
	f.Fuzz(func(t *testing.T, name string) {
		for _, parent := range []uint64{1, d, absdir} {
			var eo fuse.EntryOut
			h := hdr(parent)
			if s := e.fs.Lookup(nil, &h, name, &eo); s.Ok() {
				if outsideIno[eo.Attr.Ino] {
					t.Fatalf("lookup(%d, %q) reached outside inode %d", parent, name, eo.Attr.Ino)
				}
				e.fs.Forget(eo.NodeId, 1)
			}
			if co, s := e.rawCreate(parent, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY); s.Ok() {
				if outsideIno[co.Attr.Ino] {
					t.Fatalf("create(%d, %q) reached outside", parent, name)
				}
				e.fs.Forget(co.NodeId, 1)
				e.fs.Unlink(nil, &h, name)
			}
			if s := e.fs.Mkdir(nil, &fuse.MkdirIn{InHeader: h, Mode: 0o755}, name, &eo); s.Ok() {
				e.fs.Forget(eo.NodeId, 1)
				e.fs.Rmdir(nil, &h, name)
			}
		}
		e.outsideUntouched(t)
	})
}
