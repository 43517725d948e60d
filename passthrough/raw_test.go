package passthrough

import (
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
)

// TestCacheModes checks the timeouts and open flags on the replies, as
// the Rust virtiofsd sets them (and FOPEN_NOFLUSH on a read-only open).
func TestCacheModes(t *testing.T) {
	for _, c := range []struct {
		mode          string
		timeout       time.Duration
		fileFl, dirFl uint32
		readdirplus   bool
	}{
		{CacheNever, 0, fuse.FOPEN_DIRECT_IO, 0, false},
		{CacheAuto, time.Second, 0, 0, true},
		{"", time.Second, 0, 0, true},
		{CacheMetadata, 86400 * time.Second, fuse.FOPEN_DIRECT_IO, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, true},
		{CacheAlways, 86400 * time.Second, fuse.FOPEN_KEEP_CACHE, fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_CACHE_DIR, true},
	} {
		t.Run("cache="+c.mode, func(t *testing.T) {
			e := newEnv(t, Options{Cache: c.mode})
			if e.fs.opts.ReadDirPlus() != c.readdirplus {
				t.Errorf("ReadDirPlus %v", e.fs.opts.ReadDirPlus())
			}
			os.WriteFile(e.host("f"), []byte("x"), 0o644)
			os.Mkdir(e.host("d"), 0o755)
			f := e.lookup(t, 1, "f")
			if f.EntryTimeout() != c.timeout || f.AttrTimeout() != c.timeout {
				t.Errorf("lookup entry %v attr %v", f.EntryTimeout(), f.AttrTimeout())
			}
			var ao fuse.AttrOut
			if s := e.fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(f.NodeId)}, &ao); !s.Ok() || ao.Timeout() != c.timeout {
				t.Errorf("getattr %v timeout %v", s, ao.Timeout())
			}
			var oo fuse.OpenOut
			if s := e.fs.Open(nil, &fuse.OpenIn{InHeader: hdr(f.NodeId), Flags: unix.O_RDONLY}, &oo); !s.Ok() || oo.OpenFlags != c.fileFl|fuse.FOPEN_NOFLUSH {
				t.Errorf("open %v flags %#x, want %#x", s, oo.OpenFlags, c.fileFl|fuse.FOPEN_NOFLUSH)
			}
			d := e.lookup(t, 1, "d")
			if s := e.fs.OpenDir(nil, &fuse.OpenIn{InHeader: hdr(d.NodeId)}, &oo); !s.Ok() || oo.OpenFlags != c.dirFl {
				t.Errorf("opendir %v flags %#x, want %#x", s, oo.OpenFlags, c.dirFl)
			}
			var co fuse.CreateOut
			in := fuse.CreateIn{InHeader: hdr(1), Flags: unix.O_CREAT | unix.O_RDWR, Mode: 0o644}
			if s := e.fs.Create(nil, &in, "new", &co); !s.Ok() || co.OpenFlags != c.fileFl || co.EntryTimeout() != c.timeout {
				t.Errorf("create %v flags %#x timeout %v", s, co.OpenFlags, co.EntryTimeout())
			}
			// READDIRPLUS entries carry the same timeouts.
			if s := e.fs.OpenDir(nil, &fuse.OpenIn{InHeader: hdr(1)}, &oo); !s.Ok() {
				t.Fatal(s)
			}
			buf := make([]byte, 8192)
			list := fuse.NewDirEntryList(buf, 0)
			if s := e.fs.ReadDirPlus(nil, &fuse.ReadIn{InHeader: hdr(1), Fh: oo.Fh, Size: 8192}, list); !s.Ok() {
				t.Fatal(s)
			}
			ents, outs, err := fuse.ParseDirLookupEntries(list.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			seen := 0
			for i, de := range ents {
				if de.Name == "f" || de.Name == "d" || de.Name == "new" {
					seen++
					if outs[i].NodeId == 0 || outs[i].EntryTimeout() != c.timeout || outs[i].Attr.Ino != de.Ino {
						t.Errorf("readdirplus %s: node %d timeout %v ino %d/%d", de.Name, outs[i].NodeId, outs[i].EntryTimeout(), outs[i].Attr.Ino, de.Ino)
					}
				}
			}
			if seen != 3 {
				t.Errorf("readdirplus saw %d of 3 entries", seen)
			}
		})
	}
}

// TestForget: lookups are counted (Lookup, ReadDirPlus, Create, Mkdir, ...)
// and the inode goes when FORGET brings the count to zero.
func TestForget(t *testing.T) {
	e := newEnv(t, Options{})
	os.WriteFile(e.host("f"), nil, 0o644)
	a := e.lookup(t, 1, "f")
	b := e.lookup(t, 1, "f")
	if a.NodeId != b.NodeId {
		t.Fatalf("two node IDs for one inode: %d %d", a.NodeId, b.NodeId)
	}
	if n, _ := e.fs.Inodes(); n != 2 {
		t.Fatalf("%d inodes", n)
	}
	e.fs.Forget(a.NodeId, 1)
	var ao fuse.AttrOut
	if s := e.fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(a.NodeId)}, &ao); !s.Ok() {
		t.Fatalf("getattr after one of two forgets: %v", s)
	}
	e.fs.Forget(a.NodeId, 1)
	if s := e.fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(a.NodeId)}, &ao); s != fuse.EBADF {
		t.Fatalf("getattr after forget: %v", s)
	}
	if n, cached := e.fs.Inodes(); n != 1 || cached != 0 {
		t.Fatalf("%d inodes, %d cached fds after forget", n, cached)
	}
	e.fs.Forget(1, 100) // the root is never forgotten
	e.fs.Forget(12345, 1)
	e.lookup(t, 1, ".")
	// A new lookup gets a fresh node ID: IDs are never reused.
	if c := e.lookup(t, 1, "f"); c.NodeId == a.NodeId {
		t.Fatalf("node ID %d reused", c.NodeId)
	}
}

// TestForgetThroughKernel: when the kernel drops its dentries it sends
// (batch) FORGETs and the inodes go promptly.
func TestForgetThroughKernel(t *testing.T) {
	e := mountEnv(t, Options{Cache: CacheAlways})
	for i := 0; i < 500; i++ {
		os.WriteFile(e.host("f"+strconv.Itoa(i)), nil, 0o644)
	}
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(e.via("f" + strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := e.fs.Inodes(); n < 500 {
		t.Fatalf("%d inodes after stat'ing 500 files", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
			testenv.Skipf(t, "cannot drop caches: %v", err)
		}
		n, _ := e.fs.Inodes()
		if n < 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d inodes still known after dropping the kernel's caches", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReadIsZeroCopy: Read answers with an fd segment for fusewire, which
// stays usable until Done even if the file is released meanwhile.
func TestReadIsZeroCopy(t *testing.T) {
	e := newEnv(t, Options{})
	os.WriteFile(e.host("f"), []byte("0123456789"), 0o644)
	f := e.lookup(t, 1, "f")
	var oo fuse.OpenOut
	if s := e.fs.Open(nil, &fuse.OpenIn{InHeader: hdr(f.NodeId), Flags: unix.O_RDONLY}, &oo); !s.Ok() {
		t.Fatal(s)
	}
	res, s := e.fs.Read(nil, &fuse.ReadIn{InHeader: hdr(f.NodeId), Fh: oo.Fh, Offset: 3, Size: 100}, nil)
	if !s.Ok() {
		t.Fatal(s)
	}
	seg, ok := res.(fusewire.SegmentedResult)
	if !ok {
		t.Fatalf("%T is not a fusewire.SegmentedResult", res)
	}
	segs := seg.Segments()
	if len(segs) != 1 || segs[0].Off != 3 || segs[0].Len != 100 {
		t.Fatalf("segments %+v", segs)
	}
	e.fs.Release(nil, &fuse.ReleaseIn{Fh: oo.Fh})
	buf := make([]byte, 100)
	got, s := res.Bytes(buf)
	if !s.Ok() || string(got) != "3456789" {
		t.Fatalf("after release: %q %v", got, s)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(segs[0].Fd, &st); err != nil || st.Ino != f.Attr.Ino {
		t.Fatalf("segment fd: %v", err)
	}
	res.Done()
	res.Done()
	if _, err := unix.FcntlInt(uintptr(segs[0].Fd), unix.F_GETFD, 0); err != syscall.EBADF {
		t.Fatalf("fd still open after release and Done: %v", err)
	}
	if _, s := e.fs.Read(nil, &fuse.ReadIn{Fh: oo.Fh, Size: 1}, nil); s != fuse.EBADF {
		t.Fatalf("read of released handle: %v", s)
	}
}

// TestReadOnly refuses every change with EROFS.
func TestReadOnly(t *testing.T) {
	e := newEnv(t, Options{ReadOnly: true, Xattr: true})
	os.WriteFile(e.host("f"), []byte("x"), 0o644)
	f := e.lookup(t, 1, "f").NodeId
	var eo fuse.EntryOut
	h := hdr(1)
	fh := hdr(f)
	var ao fuse.AttrOut
	var oo fuse.OpenOut
	for name, s := range map[string]fuse.Status{
		"mkdir":    e.fs.Mkdir(nil, &fuse.MkdirIn{InHeader: h, Mode: 0o755}, "d", &eo),
		"unlink":   e.fs.Unlink(nil, &h, "f"),
		"setattr":  e.fs.SetAttr(nil, &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: fh, Valid: fuse.FATTR_MODE, Mode: 0o600}}, &ao),
		"open-w":   e.fs.Open(nil, &fuse.OpenIn{InHeader: fh, Flags: unix.O_WRONLY}, &oo),
		"setxattr": e.fs.SetXAttr(nil, &fuse.SetXAttrIn{InHeader: fh}, "user.a", []byte("b")),
		"rename":   e.fs.Rename(nil, &fuse.RenameIn{InHeader: h, Newdir: 1}, "f", "g"),
	} {
		if s != fuse.EROFS {
			t.Errorf("%s: %v, want EROFS", name, s)
		}
	}
	if s := e.fs.Open(nil, &fuse.OpenIn{InHeader: fh, Flags: unix.O_RDONLY}, &oo); !s.Ok() {
		t.Errorf("read-only open: %v", s)
	}
	if st := mustStat(t, e.host("f")); st.Mode&0o777 != 0o644 {
		t.Errorf("mode changed to %o", st.Mode)
	}
}

// TestAccess checks the ACCESS answer from mode bits.
func TestAccess(t *testing.T) {
	e := newEnv(t, Options{})
	os.WriteFile(e.host("f"), nil, 0o640)
	os.Chown(e.host("f"), testUID, 2000)
	f := e.lookup(t, 1, "f").NodeId
	for _, c := range []struct {
		uid, gid, mask uint32
		want           fuse.Status
	}{
		{testUID, 1, unix.R_OK | unix.W_OK, fuse.OK},
		{testUID, 1, unix.X_OK, fuse.EACCES},
		{5, 2000, unix.R_OK, fuse.OK},
		{5, 2000, unix.W_OK, fuse.EACCES},
		{5, 5, unix.R_OK, fuse.EACCES},
		{0, 0, unix.R_OK | unix.W_OK, fuse.OK},
		{0, 0, unix.X_OK, fuse.EACCES},
	} {
		in := fuse.AccessIn{InHeader: fuse.InHeader{NodeId: f, Caller: fuse.Caller{Owner: fuse.Owner{Uid: c.uid, Gid: c.gid}}}, Mask: c.mask}
		if s := e.fs.Access(nil, &in); s != c.want {
			t.Errorf("access uid %d gid %d mask %d: %v, want %v", c.uid, c.gid, c.mask, s, c.want)
		}
	}
}

// TestFdCacheConcurrent: many requests on few fd slots; every fd is
// closed once the guest has forgotten everything.
func TestFdCacheConcurrent(t *testing.T) {
	e := newEnv(t, Options{FdCacheSize: 4})
	for i := 0; i < 50; i++ {
		os.WriteFile(e.host("f"+strconv.Itoa(i)), []byte("x"), 0o644)
	}
	before := openFds(t)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 400; i++ {
				name := "f" + strconv.Itoa((i*7+g)%50)
				var eo fuse.EntryOut
				h := hdr(1)
				if s := e.fs.Lookup(nil, &h, name, &eo); !s.Ok() {
					t.Errorf("lookup: %v", s)
					return
				}
				var ao fuse.AttrOut
				if s := e.fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(eo.NodeId)}, &ao); !s.Ok() {
					t.Errorf("getattr: %v", s)
				}
				var oo fuse.OpenOut
				if i%5 == 0 && e.fs.Open(nil, &fuse.OpenIn{InHeader: hdr(eo.NodeId)}, &oo).Ok() {
					e.fs.Release(nil, &fuse.ReleaseIn{Fh: oo.Fh})
				}
				e.fs.Forget(eo.NodeId, 1)
			}
		}(g)
	}
	wg.Wait()
	if n, cached := e.fs.Inodes(); n != 1 || cached != 0 {
		t.Fatalf("%d inodes, %d cached fds left", n, cached)
	}
	if after := openFds(t); after > before {
		t.Fatalf("%d fds open before, %d after", before, after)
	}
}

// TestDirectIO: the guest's O_DIRECT reaches the host fd (with direct I/O
// in the reply) only with AllowDirectIO, as virtiofsd --allow-direct-io.
func TestDirectIO(t *testing.T) {
	for _, allow := range []bool{false, true} {
		e := newEnv(t, Options{AllowDirectIO: allow})
		os.WriteFile(e.host("f"), make([]byte, 4096), 0o644)
		f := e.lookup(t, 1, "f").NodeId
		var oo fuse.OpenOut
		if s := e.fs.Open(nil, &fuse.OpenIn{InHeader: hdr(f), Flags: unix.O_RDONLY | unix.O_DIRECT}, &oo); !s.Ok() {
			t.Fatal(s)
		}
		h := e.fs.getFile(oo.Fh)
		fl, err := unix.FcntlInt(uintptr(h.fd), unix.F_GETFL, 0)
		e.fs.putFile(h)
		if err != nil {
			t.Fatal(err)
		}
		if got := fl&unix.O_DIRECT != 0; got != allow {
			t.Errorf("allow %v: host fd O_DIRECT %v", allow, got)
		}
		if got := oo.OpenFlags&fuse.FOPEN_DIRECT_IO != 0; got != allow {
			t.Errorf("allow %v: FOPEN_DIRECT_IO %v", allow, got)
		}
	}
}

// TestRenameWhiteout: RENAME_WHITEOUT (overlayfs in the guest) leaves a
// 0:0 character device at the old name.
func TestRenameWhiteout(t *testing.T) {
	e := newEnv(t, Options{})
	os.WriteFile(e.host("a"), []byte("x"), 0o644)
	if s := e.fs.Rename(nil, &fuse.RenameIn{InHeader: hdr(1), Newdir: 1, Flags: unix.RENAME_WHITEOUT}, "a", "b"); !s.Ok() {
		t.Fatalf("rename whiteout: %v", s)
	}
	st := mustStat(t, e.host("a"))
	if st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 0 {
		t.Fatalf("whiteout is mode %o rdev %d", st.Mode, st.Rdev)
	}
	if b, _ := os.ReadFile(e.host("b")); string(b) != "x" {
		t.Fatalf("b = %q", b)
	}
	if s := e.fs.Rename(nil, &fuse.RenameIn{InHeader: hdr(1), Newdir: 1, Flags: 1 << 30}, "b", "c"); s != fuse.EINVAL {
		t.Fatalf("unknown rename flag: %v", s)
	}
}

// TestOnUnmount: DESTROY leaves the guest holding nothing; every inode but
// the root and every open file and fd go.
func TestOnUnmount(t *testing.T) {
	e := newEnv(t, Options{})
	for i := 0; i < 10; i++ {
		os.WriteFile(e.host("f"+strconv.Itoa(i)), nil, 0o644)
	}
	before := openFds(t)
	for i := 0; i < 10; i++ {
		f := e.lookup(t, 1, "f"+strconv.Itoa(i)).NodeId
		var oo fuse.OpenOut
		if s := e.fs.Open(nil, &fuse.OpenIn{InHeader: hdr(f), Flags: unix.O_RDONLY}, &oo); !s.Ok() {
			t.Fatal(s)
		}
	}
	h := hdr(1)
	if s := e.fs.SyncFS(nil, &h); !s.Ok() {
		t.Fatalf("syncfs: %v", s)
	}
	e.fs.OnUnmount()
	if n, cached := e.fs.Inodes(); n != 1 || cached != 0 {
		t.Fatalf("%d inodes, %d cached fds after unmount", n, cached)
	}
	if after := openFds(t); after > before {
		t.Fatalf("%d fds before, %d after unmount", before, after)
	}
	e.lookup(t, 1, "f0") // a new session works
}

// TestTmpfile: O_TMPFILE makes an unnamed file owned by the caller, which
// LINK can name.
func TestTmpfile(t *testing.T) {
	e := newEnv(t, Options{})
	os.Mkdir(e.host("pub"), 0o777)
	unix.Chmod(e.host("pub"), 0o777)
	pub := e.lookup(t, 1, "pub").NodeId
	var co fuse.CreateOut
	in := fuse.CreateIn{InHeader: fuse.InHeader{NodeId: pub, Caller: fuse.Caller{Owner: fuse.Owner{Uid: testUID, Gid: testGID}}},
		Flags: unix.O_RDWR | unix.O_TMPFILE, Mode: 0o640}
	if s := e.fs.Tmpfile(nil, &in, &co); !s.Ok() {
		t.Fatalf("tmpfile: %v", s)
	}
	if ents, _ := os.ReadDir(e.host("pub")); len(ents) != 0 {
		t.Fatalf("tmpfile has a name: %v", ents)
	}
	if n, s := e.fs.Write(nil, &fuse.WriteIn{Fh: co.Fh}, []byte("anon")); !s.Ok() || n != 4 {
		t.Fatalf("write: %d %v", n, s)
	}
	var eo fuse.EntryOut
	if s := e.fs.Link(nil, &fuse.LinkIn{InHeader: hdr(pub), Oldnodeid: co.NodeId}, "named", &eo); !s.Ok() {
		t.Fatalf("link: %v", s)
	}
	e.fs.Release(nil, &fuse.ReleaseIn{Fh: co.Fh})
	st := mustStat(t, e.host("pub", "named"))
	if b, _ := os.ReadFile(e.host("pub", "named")); string(b) != "anon" || st.Uid != testUID || st.Mode&0o777 != 0o640 {
		t.Fatalf("named: %q uid %d mode %o", b, st.Uid, st.Mode)
	}
}
