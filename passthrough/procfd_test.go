package passthrough

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// procOps runs every operation that reaches an inode through its entry in
// /proc/self/fd (re-opening pinned inodes and files, the fd of a submount,
// truncate, the chmod and utimes fallbacks, xattrs on each kind
// of inode in each form) and checks the host sees their effect. With
// fallbacks the AT_EMPTY_PATH and *xattrat forms are skipped, so the
// procfd paths run even on kernels that would not need them.
func procOps(t *testing.T, opts Options, fallbacks bool) {
	opts.Xattr = true
	opts.XattrMap, _ = ParseXattrMap(":ok:all:::") // trusted.* through as is
	e := newEnv(t, opts)
	e.fs.procFallbacks = fallbacks
	if fallbacks {
		e.fs.proc.xattrAt = false
	}
	if err := os.WriteFile(e.host("f"), []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"d", "sub"} {
		if err := os.Mkdir(e.host(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("f", e.host("l")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(e.host("p"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.mountIn(t, "tmpfs", "size=64k", "sub")
	if err := os.WriteFile(e.host("sub", "x"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	nodes := map[string]uint64{}
	for _, name := range []string{"f", "d", "l", "p", "sub"} {
		nodes[name] = e.lookup(t, 1, name).NodeId
	}
	x := e.lookup(t, nodes["sub"], "x")
	if e.fs.handles {
		usable := 0
		for _, fd := range e.fs.mounts {
			if fd >= 0 {
				usable++
			}
		}
		if usable != 2 {
			t.Errorf("%d mounts with an fd for open_by_handle_at, want 2 (the share and sub): %v", usable, e.fs.mounts)
		}
	}

	// Open (reopen) and read; OpenDir; SyncFS.
	var oo fuse.OpenOut
	if s := e.fs.Open(nil, &fuse.OpenIn{InHeader: hdr(x.NodeId), Flags: unix.O_RDWR}, &oo); !s.Ok() {
		t.Fatalf("open sub/x: %v", s)
	}
	e.fs.Release(nil, &fuse.ReleaseIn{Fh: oo.Fh})
	if s := e.fs.OpenDir(nil, &fuse.OpenIn{InHeader: hdr(nodes["d"])}, &oo); !s.Ok() {
		t.Fatalf("opendir d: %v", s)
	}
	e.fs.ReleaseDir(&fuse.ReleaseIn{Fh: oo.Fh})
	h := hdr(1)
	if s := e.fs.SyncFS(nil, &h); !s.Ok() {
		t.Errorf("syncfs: %v", s)
	}

	// Create ignores the daemon's umask, and pins a new inode by
	// re-opening the created file.
	old := unix.Umask(0o077)
	defer unix.Umask(old)
	co, s := e.rawCreate(1, "new", unix.O_CREAT|unix.O_WRONLY)
	if !s.Ok() {
		t.Fatalf("create: %v", s)
	}
	if st := mustStat(t, e.host("new")); st.Mode&07777 != 0o644 {
		t.Errorf("created mode %o, want 644", st.Mode&07777)
	}
	if s := e.fs.Open(nil, &fuse.OpenIn{InHeader: hdr(co.NodeId), Flags: unix.O_RDONLY}, &oo); !s.Ok() {
		t.Fatalf("open new: %v", s)
	}
	e.fs.Release(nil, &fuse.ReleaseIn{Fh: oo.Fh})

	// SetAttr: mode, size without an open file, times; kill suid.
	var ao fuse.AttrOut
	in := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{
		InHeader: hdr(nodes["f"]), Valid: fuse.FATTR_MODE | fuse.FATTR_SIZE | fuse.FATTR_ATIME | fuse.FATTR_MTIME,
		Mode: 0o4751, Size: 3, Atime: 1000, Mtime: 2000, Mtimensec: 7,
	}}
	if s := e.fs.SetAttr(nil, &in, &ao); !s.Ok() {
		t.Fatalf("setattr: %v", s)
	}
	st := mustStat(t, e.host("f"))
	if st.Mode&07777 != 0o4751 || st.Size != 3 || st.Atim.Sec != 1000 || st.Mtim.Sec != 2000 || st.Mtim.Nsec != 7 {
		t.Errorf("after setattr: mode %o size %d atime %d mtime %d.%d", st.Mode&07777, st.Size, st.Atim.Sec, st.Mtim.Sec, st.Mtim.Nsec)
	}
	in.Valid = fuse.FATTR_KILL_SUIDGID
	if s := e.fs.SetAttr(nil, &in, &ao); !s.Ok() {
		t.Fatalf("setattr kill_suidgid: %v", s)
	}
	if st := mustStat(t, e.host("f")); st.Mode&07777 != 0o751 {
		t.Errorf("after kill_suidgid: mode %o, want 751", st.Mode&07777)
	}
	in = fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: hdr(nodes["l"]), Valid: fuse.FATTR_MTIME, Mtime: 3000}}
	if s := e.fs.SetAttr(nil, &in, &ao); !s.Ok() {
		t.Errorf("utimes of a symlink: %v", s)
	} else if st := mustStat(t, e.host("l")); st.Mtim.Sec != 3000 {
		t.Errorf("symlink mtime %d, want 3000", st.Mtim.Sec)
	} else if st := mustStat(t, e.host("f")); st.Mtim.Sec != 2000 {
		t.Errorf("utimes of a symlink changed its target: mtime %d", st.Mtim.Sec)
	}

	// Xattrs on each kind of inode: trusted.* (user.* is for regular
	// files and directories only).
	for _, name := range []string{"f", "d", "l", "p", "sub"} {
		hn := hdr(nodes[name])
		attr, val := "trusted.procfd", []byte("v-"+name)
		if s := e.fs.SetXAttr(nil, &fuse.SetXAttrIn{InHeader: hn}, attr, val); !s.Ok() {
			t.Errorf("%s: setxattr: %v", name, s)
			continue
		}
		buf := make([]byte, 64)
		if n, err := unix.Lgetxattr(e.host(name), attr, buf); err != nil || !bytes.Equal(buf[:n], val) {
			t.Errorf("%s: on the host %s = %q %v", name, attr, buf[:max(n, 0)], err)
		}
		if _, err := unix.Lgetxattr(e.host("f"), attr, buf); name == "l" && !errors.Is(err, unix.ENODATA) {
			t.Errorf("xattr of the symlink landed on its target: %v", err)
		}
		if n, s := e.fs.GetXAttr(nil, &hn, attr, nil); !s.Ok() || int(n) != len(val) {
			t.Errorf("%s: getxattr size %d %v", name, n, s)
		}
		if n, s := e.fs.GetXAttr(nil, &hn, attr, buf); !s.Ok() || !bytes.Equal(buf[:n], val) {
			t.Errorf("%s: getxattr %q %v", name, buf[:n], s)
		}
		if n, s := e.fs.ListXAttr(nil, &hn, buf); !s.Ok() || !bytes.Contains(buf[:n], []byte(attr+"\x00")) {
			t.Errorf("%s: listxattr %q %v", name, buf[:n], s)
		}
		if s := e.fs.SetXAttr(nil, &fuse.SetXAttrIn{InHeader: hn, Flags: unix.XATTR_CREATE}, attr, val); s != fuse.Status(syscall.EEXIST) {
			t.Errorf("%s: setxattr XATTR_CREATE over an existing one: %v", name, s)
		}
		if s := e.fs.RemoveXAttr(nil, &hn, attr); !s.Ok() {
			t.Errorf("%s: removexattr: %v", name, s)
		}
		if _, err := unix.Lgetxattr(e.host(name), attr, buf); !errors.Is(err, unix.ENODATA) {
			t.Errorf("%s: after removexattr the host has %s: %v", name, attr, err)
		}
	}
	if got := mustStat(t, e.host("l")); got.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		t.Errorf("l is no longer a symlink")
	}
	if fallbacks && e.fs.proc.thread == nil {
		t.Errorf("xattrs on a symlink and a FIFO did not use the cwd thread")
	}
	e.outsideUntouched(t)
}

// procConfigs are the ways procOps runs: with and without file handles,
// with and without the forms that need no /proc/self/fd.
var procConfigs = []struct {
	name      string
	opts      Options
	fallbacks bool
}{
	{"handles", Options{}, false},
	{"handles fallbacks", Options{}, true},
	{"pinned", Options{InodeFileHandles: HandlesNever}, false},
	{"pinned fallbacks", Options{InodeFileHandles: HandlesNever}, true},
}

func TestProcOps(t *testing.T) {
	requireRoot(t)
	for _, c := range procConfigs {
		t.Run(c.name, func(t *testing.T) { procOps(t, c.opts, c.fallbacks) })
	}
}

// noProcEnv marks the child of TestProcOpsWithoutProc.
const noProcEnv = "PASSTHROUGH_TEST_NO_PROC"

// TestProcOpsWithoutProc runs procOps in a child process in its own mount
// namespace where no procfs is reachable by any path: /proc is an empty
// read-only tmpfs, and the /proc/self/fd fd handed over as
// Options.ProcSelfFD comes from a procfs mounted elsewhere and detached
// at once. Any use of a /proc path fails there.
func TestProcOpsWithoutProc(t *testing.T) {
	requireRoot(t)
	if os.Getenv(noProcEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestProcOpsWithoutProc$", "-test.v")
		cmd.Env = append(os.Environ(), noProcEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestProcOpsWithoutProc/pinned_fallbacks") {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return
	}

	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	alt, err := os.MkdirTemp("", "altproc")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(alt)
	if err := unix.Mount("proc", alt, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		// Some containers refuse a new procfs: bind the old one.
		if err := unix.Mount("/proc", alt, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			t.Fatal(err)
		}
	}
	procSelfFD, err := os.OpenFile(filepath.Join(alt, "self", "fd"), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer procSelfFD.Close()
	if err := unix.Unmount(alt, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", "/proc", "tmpfs", unix.MS_RDONLY, "size=4k"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/proc/self/fd"); err == nil {
		t.Fatal("/proc/self/fd still reachable")
	}

	if _, err := New(t.TempDir(), Options{}); err == nil || !strings.Contains(err.Error(), "ProcSelfFD") {
		t.Errorf("New without /proc and without ProcSelfFD: %v", err)
	}
	for _, c := range procConfigs {
		t.Run(c.name, func(t *testing.T) {
			opts := c.opts
			opts.ProcSelfFD = procSelfFD
			procOps(t, opts, c.fallbacks)
		})
	}
}

// TestProcSelfFDChecked: New refuses a ProcSelfFD that is not this
// process's /proc/self/fd.
func TestProcSelfFDChecked(t *testing.T) {
	requireRoot(t)
	share := t.TempDir()
	for _, p := range []string{share, "/proc/1/fd", "/proc/self"} {
		f, err := os.OpenFile(p, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fs, err := New(share, Options{ProcSelfFD: f}); err == nil {
			fs.Close()
			t.Errorf("New accepted %s as ProcSelfFD", p)
		}
		f.Close()
	}
}
