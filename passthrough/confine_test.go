package passthrough

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The confinement tests speak to the RawFileSystem directly, as a hostile
// guest would: through a host mount the host kernel would resolve symlinks
// itself, which says nothing about the daemon.

const enotdir = fuse.Status(syscall.ENOTDIR)

func (e *env) rawCreate(parent uint64, name string, flags uint32) (fuse.CreateOut, fuse.Status) {
	var out fuse.CreateOut
	in := fuse.CreateIn{InHeader: hdr(parent), Flags: flags, Mode: 0o644}
	s := e.fs.Create(nil, &in, name, &out)
	if s.Ok() {
		e.fs.Release(nil, &fuse.ReleaseIn{Fh: out.Fh})
	}
	return out, s
}

func (e *env) rawOpen(node uint64, flags uint32) fuse.Status {
	var out fuse.OpenOut
	in := fuse.OpenIn{InHeader: hdr(node), Flags: flags}
	s := e.fs.Open(nil, &in, &out)
	if s.Ok() {
		e.fs.Release(nil, &fuse.ReleaseIn{Fh: out.Fh})
	}
	return s
}

// nameOps are every create-type or name-changing operation, run with a
// parent node and a name.
func (e *env) nameOps(other uint64) map[string]func(parent uint64, name string) fuse.Status {
	var eo fuse.EntryOut
	return map[string]func(uint64, string) fuse.Status{
		"create": func(p uint64, n string) fuse.Status {
			_, s := e.rawCreate(p, n, unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC)
			return s
		},
		"mkdir": func(p uint64, n string) fuse.Status {
			return e.fs.Mkdir(nil, &fuse.MkdirIn{InHeader: hdr(p), Mode: 0o755}, n, &eo)
		},
		"mknod": func(p uint64, n string) fuse.Status {
			return e.fs.Mknod(nil, &fuse.MknodIn{InHeader: hdr(p), Mode: syscall.S_IFIFO | 0o644}, n, &eo)
		},
		"symlink": func(p uint64, n string) fuse.Status {
			h := hdr(p)
			return e.fs.Symlink(nil, &h, "target", n, &eo)
		},
		"link": func(p uint64, n string) fuse.Status {
			return e.fs.Link(nil, &fuse.LinkIn{InHeader: hdr(p), Oldnodeid: other}, n, &eo)
		},
		"unlink": func(p uint64, n string) fuse.Status { h := hdr(p); return e.fs.Unlink(nil, &h, n) },
		"rmdir":  func(p uint64, n string) fuse.Status { h := hdr(p); return e.fs.Rmdir(nil, &h, n) },
		"rename-from": func(p uint64, n string) fuse.Status {
			return e.fs.Rename(nil, &fuse.RenameIn{InHeader: hdr(p), Newdir: 1}, n, "renamed")
		},
		"rename-to": func(p uint64, n string) fuse.Status {
			return e.fs.Rename(nil, &fuse.RenameIn{InHeader: hdr(1), Newdir: p}, "victim", n)
		},
	}
}

func (e *env) symlinks(t testing.TB) {
	t.Helper()
	links := map[string]string{
		"abs":     filepath.Join(e.outside, "secret"),
		"absdir":  e.outside,
		"up":      "../outside",
		"upfile":  "../outside/secret",
		"upup":    "../../../../../../../../" + e.outside[1:],
		"procdir": "/proc/self/root" + e.outside,
		"procfd":  "/proc/self/fd/" + strconv.Itoa(e.fs.rootFd) + "/../outside",
	}
	for name, target := range links {
		if err := os.Symlink(target, e.host(name)); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(e.host("victim"), []byte("v"), 0o644)
}

// TestEscapeSymlinks: absolute, ..-climbing and /proc magic-link symlinks
// are nodes of their own; nothing is resolved through them.
func TestEscapeSymlinks(t *testing.T) {
	e := newEnv(t, Options{Xattr: true})
	e.symlinks(t)
	victim := e.lookup(t, 1, "victim").NodeId
	for _, name := range []string{"abs", "absdir", "up", "upfile", "upup", "procdir", "procfd"} {
		t.Run(name, func(t *testing.T) {
			out := e.lookup(t, 1, name)
			if out.Attr.Mode&syscall.S_IFMT != syscall.S_IFLNK {
				t.Fatalf("lookup gave mode %o, want the symlink itself", out.Attr.Mode)
			}
			link := out.NodeId
			var eo fuse.EntryOut
			h := hdr(link)
			if s := e.fs.Lookup(nil, &h, "secret", &eo); s != enotdir {
				t.Errorf("lookup through symlink: %v", s)
			}
			for _, flags := range []uint32{unix.O_RDONLY, unix.O_RDWR | unix.O_TRUNC, unix.O_WRONLY | unix.O_APPEND} {
				if s := e.rawOpen(link, flags); s.Ok() {
					t.Errorf("open(symlink, %#x) succeeded", flags)
				}
			}
			var oo fuse.OpenOut
			if s := e.fs.OpenDir(nil, &fuse.OpenIn{InHeader: h}, &oo); s.Ok() {
				t.Errorf("opendir through symlink succeeded")
			}
			// Create over the symlink's name must not follow it.
			if _, s := e.rawCreate(1, name, unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC); s.Ok() {
				t.Errorf("create over symlink succeeded")
			}
			var ao fuse.AttrOut
			in := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: h, Valid: fuse.FATTR_SIZE}}
			if s := e.fs.SetAttr(nil, &in, &ao); s.Ok() {
				t.Errorf("truncate of symlink succeeded")
			}
			in.Valid = fuse.FATTR_MODE
			in.Mode = 0o777
			e.fs.SetAttr(nil, &in, &ao)
			if s := e.fs.SetXAttr(nil, &fuse.SetXAttrIn{InHeader: h}, "user.pwn", []byte("x")); s.Ok() {
				t.Errorf("setxattr on symlink succeeded")
			}
			buf := make([]byte, 64)
			if _, s := e.fs.GetXAttr(nil, &h, "user.pwn", buf); s.Ok() {
				t.Errorf("getxattr through symlink found something")
			}
			for op, f := range e.nameOps(victim) {
				if s := f(link, "secret"); s != enotdir {
					t.Errorf("%s with symlink parent: %v, want ENOTDIR", op, s)
				}
			}
			if got, s := e.fs.Readlink(nil, &h); !s.Ok() || len(got) == 0 {
				t.Errorf("readlink: %v", s)
			}
			e.outsideUntouched(t)
		})
	}
}

// TestEscapeBadNames: names are single components; "..": of the root is
// the root.
func TestEscapeBadNames(t *testing.T) {
	e := newEnv(t, Options{})
	os.Mkdir(e.host("d"), 0o755)
	os.WriteFile(e.host("victim"), nil, 0o644)
	victim := e.lookup(t, 1, "victim").NodeId
	root := mustStat(t, e.share)
	for _, name := range []string{"..", "."} {
		out := e.lookup(t, 1, name)
		if out.NodeId != 1 || out.Attr.Ino != root.Ino {
			t.Fatalf("lookup %q at root: node %d ino %d, want the root", name, out.NodeId, out.Attr.Ino)
		}
	}
	d := e.lookup(t, 1, "d").NodeId
	if out := e.lookup(t, d, ".."); out.NodeId != 1 {
		t.Fatalf("lookup .. in d: node %d", out.NodeId)
	}
	up := e.lookup(t, 1, "..").NodeId
	var eo fuse.EntryOut
	h := hdr(up)
	if s := e.fs.Lookup(nil, &h, "outside", &eo); s != fuse.ENOENT {
		t.Fatalf("lookup outside from ..: %v", s)
	}
	bad := []string{"", "/", "..", ".", "../outside", "d/../../outside", e.outside, "a\x00b", "/proc/self/root"}
	for _, name := range bad {
		if name != ".." && name != "." {
			h := hdr(1)
			if s := e.fs.Lookup(nil, &h, name, &eo); s != fuse.EINVAL {
				t.Errorf("lookup %q: %v, want EINVAL", name, s)
			}
		}
		for op, f := range e.nameOps(victim) {
			if s := f(1, name); s != fuse.EINVAL {
				t.Errorf("%s %q: %v, want EINVAL", op, name, s)
			}
		}
	}
	e.outsideUntouched(t)
}

// TestEscapeSwappedParent: a directory the guest looked up is replaced on
// the host by a symlink to the outside; operations on the node still act
// on the directory inode, wherever it now is.
func TestEscapeSwappedParent(t *testing.T) {
	e := newEnv(t, Options{})
	os.Mkdir(e.host("p"), 0o755)
	os.WriteFile(e.host("victim"), nil, 0o644)
	p := e.lookup(t, 1, "p").NodeId
	victim := e.lookup(t, 1, "victim").NodeId
	os.Rename(e.host("p"), e.host("p.old"))
	os.Symlink(e.outside, e.host("p"))
	for op, f := range e.nameOps(victim) {
		if op == "rename-to" || op == "unlink" || op == "rmdir" || op == "rename-from" {
			continue
		}
		if s := f(p, op); !s.Ok() {
			t.Errorf("%s in swapped parent: %v", op, s)
		}
		if _, err := os.Lstat(e.host("p.old", op)); err != nil {
			t.Errorf("%s did not land in the directory inode: %v", op, err)
		}
	}
	h := hdr(p)
	if s := e.fs.Unlink(nil, &h, "secret"); s != fuse.ENOENT {
		t.Errorf("unlink secret in swapped parent: %v", s)
	}
	e.outsideUntouched(t)
}

// TestEscapeRenameRace: one goroutine keeps swapping a directory for a
// symlink to the outside while another looks up, creates and opens
// through it. Both states must be seen, and nothing may reach outside.
func TestEscapeRenameRace(t *testing.T) {
	e := newEnv(t, Options{})
	os.Mkdir(e.host("d"), 0o755)
	secretIno := mustStat(t, filepath.Join(e.outside, "secret")).Ino
	os.Symlink(e.outside, e.host("d.link"))
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// "d" is always there, atomically a directory or a symlink.
		for !stop.Load() {
			unix.Renameat2(unix.AT_FDCWD, e.host("d"), unix.AT_FDCWD, e.host("d.link"), unix.RENAME_EXCHANGE)
		}
	}()
	var sawDir, sawLink int
	for i := 0; i < 20000; i++ {
		var eo fuse.EntryOut
		h := hdr(1)
		if s := e.fs.Lookup(nil, &h, "d", &eo); !s.Ok() {
			continue
		}
		d := eo.NodeId
		if eo.Attr.Mode&syscall.S_IFMT == syscall.S_IFLNK {
			sawLink++
		} else {
			sawDir++
		}
		dh := hdr(d)
		var so fuse.EntryOut
		if s := e.fs.Lookup(nil, &dh, "secret", &so); s.Ok() {
			if so.Attr.Ino == secretIno {
				t.Fatalf("iteration %d: looked up the outside secret", i)
			}
			e.fs.Forget(so.NodeId, 1)
		}
		if co, s := e.rawCreate(d, "c"+strconv.Itoa(i%50), unix.O_CREAT|unix.O_WRONLY); s.Ok() {
			e.fs.Forget(co.NodeId, 1)
		}
		var oo fuse.OpenOut
		if s := e.fs.OpenDir(nil, &fuse.OpenIn{InHeader: dh}, &oo); s.Ok() {
			e.fs.ReleaseDir(&fuse.ReleaseIn{Fh: oo.Fh})
		}
		e.fs.Forget(d, 1)
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("saw the directory %d times, the symlink %d times", sawDir, sawLink)
	if sawDir == 0 || sawLink == 0 {
		t.Fatalf("the race did not happen (dir %d, link %d)", sawDir, sawLink)
	}
	e.outsideUntouched(t)
}

// TestEscapeHardLink: a link's source is a node the guest already has, so
// an outside file cannot even be named; a symlink node is linked itself.
func TestEscapeHardLink(t *testing.T) {
	e := mountEnv(t, Options{})
	e.symlinks(t)
	var eo fuse.EntryOut
	for _, bogus := range []uint64{0, 999999, 1 << 63} {
		if s := e.fs.Link(nil, &fuse.LinkIn{InHeader: hdr(1), Oldnodeid: bogus}, "hl", &eo); s.Ok() {
			t.Fatalf("link from unknown node %d succeeded", bogus)
		}
	}
	abs := e.lookup(t, 1, "abs")
	if s := e.fs.Link(nil, &fuse.LinkIn{InHeader: hdr(1), Oldnodeid: abs.NodeId}, "hl", &eo); !s.Ok() {
		t.Fatalf("link of symlink node: %v", s)
	}
	if st := mustStat(t, e.host("hl")); st.Mode&syscall.S_IFMT != syscall.S_IFLNK || st.Ino != abs.Attr.Ino {
		t.Fatalf("hl is mode %o ino %d, want the symlink itself", st.Mode, st.Ino)
	}
	// Through the kernel, an outside source is another filesystem.
	if err := os.Link(filepath.Join(e.outside, "secret"), e.via("hl2")); !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("link from outside through the mount: %v, want EXDEV", err)
	}
	e.outsideUntouched(t)
}

// TestEscapeDeviceNode: a device node the guest makes can be created but
// never opened by the daemon.
func TestEscapeDeviceNode(t *testing.T) {
	e := newEnv(t, Options{})
	var eo fuse.EntryOut
	in := fuse.MknodIn{InHeader: hdr(1), Mode: syscall.S_IFCHR | 0o666, Rdev: uint32(unix.Mkdev(1, 3))}
	if s := e.fs.Mknod(nil, &in, "null", &eo); !s.Ok() {
		t.Fatalf("mknod: %v", s)
	}
	for _, flags := range []uint32{unix.O_RDONLY, unix.O_WRONLY} {
		if s := e.rawOpen(eo.NodeId, flags); s != fuse.EBADF {
			t.Fatalf("open device node: %v, want EBADF", s)
		}
	}
}

// TestCreateOverExisting: CREATE without O_EXCL on an existing name opens
// a regular file (truncating on O_TRUNC), but never a FIFO (which would
// block the daemon), a device node or a symlink's target.
func TestCreateOverExisting(t *testing.T) {
	e := newEnv(t, Options{})
	e.symlinks(t)
	os.WriteFile(e.host("reg"), []byte("content"), 0o644)
	unix.Mkfifo(e.host("fifo"), 0o666)
	unix.Mknod(e.host("mem"), syscall.S_IFCHR|0o666, int(unix.Mkdev(1, 1))) // /dev/mem
	os.Mkdir(e.host("dir"), 0o755)
	done := make(chan struct{})
	go func() {
		defer close(done)
		out, s := e.rawCreate(1, "reg", unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC)
		if !s.Ok() || out.Attr.Ino != mustStat(t, e.host("reg")).Ino {
			t.Errorf("create over a regular file: %v", s)
		}
		if st := mustStat(t, e.host("reg")); st.Size != 0 {
			t.Errorf("O_TRUNC left %d bytes", st.Size)
		}
		for _, name := range []string{"fifo", "mem", "dir", "abs", "upfile"} {
			for _, fl := range []uint32{unix.O_RDONLY, unix.O_WRONLY, unix.O_RDWR | unix.O_TRUNC} {
				if _, s := e.rawCreate(1, name, unix.O_CREAT|fl); s.Ok() {
					t.Errorf("create(%s, %#x) opened it", name, fl)
				}
			}
		}
		if _, s := e.rawCreate(1, "reg", unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY); s != fuse.Status(syscall.EEXIST) {
			t.Errorf("O_EXCL over existing: %v", s)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("create over a special file blocked the daemon")
	}
	e.outsideUntouched(t)
}

// TestEscapeProcMount: with a procfs mounted inside the share, /proc/1/fd/N
// magic links are nodes of their own (symlinks): never opened, never
// walked through.
func TestEscapeProcMount(t *testing.T) {
	e := newEnv(t, Options{})
	os.Mkdir(e.host("proc"), 0o755)
	if err := unix.Mount("proc", e.host("proc"), "proc", 0, ""); err != nil {
		testenv.Skipf(t, "cannot mount procfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(e.host("proc"), unix.MNT_DETACH) })
	proc := e.lookup(t, 1, "proc").NodeId
	self := e.lookup(t, proc, "self")
	if self.Attr.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		t.Fatalf("/proc/self is mode %o", self.Attr.Mode)
	}
	pid := e.lookup(t, proc, strconv.Itoa(os.Getpid())).NodeId
	fdDir := e.lookup(t, pid, "fd").NodeId
	magic := e.lookup(t, fdDir, strconv.Itoa(e.fs.rootFd))
	if magic.Attr.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		t.Fatalf("magic link looked up as mode %o", magic.Attr.Mode)
	}
	for _, flags := range []uint32{unix.O_RDONLY, unix.O_RDWR} {
		if s := e.rawOpen(magic.NodeId, flags); s.Ok() {
			t.Fatalf("opened a magic link")
		}
	}
	var eo fuse.EntryOut
	h := hdr(magic.NodeId)
	if s := e.fs.Lookup(nil, &h, "..", &eo); s.Ok() && eo.Attr.Ino == mustStat(t, filepath.Dir(e.share)).Ino {
		t.Fatal("walked through the magic link")
	}
	for _, name := range []string{"secret", "outside"} {
		if s := e.fs.Lookup(nil, &h, name, &eo); s.Ok() {
			t.Fatalf("lookup %q through a magic link succeeded", name)
		}
	}
	for op, f := range e.nameOps(magic.NodeId) {
		if s := f(magic.NodeId, "x"); s.Ok() {
			t.Errorf("%s under a magic link succeeded", op)
		}
	}
	e.outsideUntouched(t)
}
