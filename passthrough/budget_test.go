package passthrough

import (
	"os"
	"strconv"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
)

// TestOpenFileBudget: past Options.MaxOpenFiles, OPEN, OPENDIR, CREATE and
// TMPFILE answer ENFILE, other requests still work, and a RELEASE makes
// room again.
func TestOpenFileBudget(t *testing.T) {
	e := newEnv(t, Options{MaxOpenFiles: 8})
	if err := os.WriteFile(e.host("f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(e.host("d"), 0o755)
	f := e.lookup(t, 1, "f").NodeId
	d := e.lookup(t, 1, "d").NodeId
	var fhs []uint64
	for i := 0; i < 8; i++ {
		var oo fuse.OpenOut
		if s := e.fs.Open(nil, &fuse.OpenIn{InHeader: hdr(f), Flags: unix.O_RDONLY}, &oo); !s.Ok() {
			t.Fatalf("open %d of 8: %v", i, s)
		}
		fhs = append(fhs, oo.Fh)
	}
	var oo fuse.OpenOut
	var co fuse.CreateOut
	over := map[string]func() fuse.Status{
		"open":    func() fuse.Status { return e.fs.Open(nil, &fuse.OpenIn{InHeader: hdr(f), Flags: unix.O_RDONLY}, &oo) },
		"opendir": func() fuse.Status { return e.fs.OpenDir(nil, &fuse.OpenIn{InHeader: hdr(d)}, &oo) },
		"create": func() fuse.Status {
			return e.fs.Create(nil, &fuse.CreateIn{InHeader: hdr(1), Flags: unix.O_CREAT | unix.O_WRONLY, Mode: 0o644}, "new", &co)
		},
		"tmpfile": func() fuse.Status {
			return e.fs.Tmpfile(nil, &fuse.CreateIn{InHeader: hdr(1), Flags: unix.O_WRONLY, Mode: 0o644}, &co)
		},
	}
	for name, call := range over {
		if s := call(); s != fuse.Status(unix.ENFILE) {
			t.Errorf("%s past the budget: %v, want ENFILE", name, s)
		}
	}
	if _, err := os.Lstat(e.host("new")); !os.IsNotExist(err) {
		t.Errorf("a refused CREATE left the file: %v", err)
	}
	e.lookup(t, 1, "d") // the daemon still answers
	if used, budget := e.fs.OpenFiles(); used != 8 || budget != 8 {
		t.Errorf("OpenFiles() = %d, %d; want 8, 8", used, budget)
	}
	e.fs.Release(nil, &fuse.ReleaseIn{Fh: fhs[0]})
	if s := over["opendir"](); !s.Ok() {
		t.Fatalf("opendir after a release: %v", s)
	}
	e.fs.ReleaseDir(&fuse.ReleaseIn{Fh: oo.Fh})
	for _, fh := range fhs[1:] {
		e.fs.Release(nil, &fuse.ReleaseIn{Fh: fh})
	}
	if used, _ := e.fs.OpenFiles(); used != 0 {
		t.Errorf("%d fds counted after every release", used)
	}
}

// TestPinnedFdBudget: without file handles each inode the guest uses
// pins an fd (a looked-up inode is listed until its first use), counted
// in the same budget; FORGET gives it back.
func TestPinnedFdBudget(t *testing.T) {
	e := newEnv(t, Options{MaxOpenFiles: 4, InodeFileHandles: HandlesNever})
	for i := 0; i < 5; i++ {
		os.WriteFile(e.host("f"+strconv.Itoa(i)), nil, 0o644)
	}
	var ids []uint64
	for i := 0; i < 5; i++ {
		ids = append(ids, e.lookup(t, 1, "f"+strconv.Itoa(i)).NodeId)
	}
	getattr := func(id uint64) fuse.Status {
		var ao fuse.AttrOut
		return e.fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(id)}, &ao)
	}
	for _, id := range ids[:4] {
		if s := getattr(id); !s.Ok() {
			t.Fatalf("GETATTR within the budget: %v", s)
		}
	}
	if s := getattr(ids[4]); s != fuse.Status(unix.ENFILE) {
		t.Fatalf("first use past the budget: %v, want ENFILE", s)
	}
	e.fs.Forget(ids[0], 1)
	if s := getattr(ids[4]); !s.Ok() {
		t.Fatalf("first use after a forget: %v", s)
	}
}

// TestDefaultBudgetKeepsReserve: with the default budget, a guest opening
// all it can leaves the daemon fds of its own (a vhost-user ring restart
// needs to dup the new kick and call fds).
func TestDefaultBudgetKeepsReserve(t *testing.T) {
	lowerNofile(t, 1024)
	e := newEnv(t, Options{})
	os.WriteFile(e.host("f"), nil, 0o644)
	f := e.lookup(t, 1, "f").NodeId
	var fhs []uint64
	defer func() {
		for _, fh := range fhs {
			e.fs.Release(nil, &fuse.ReleaseIn{Fh: fh})
		}
	}()
	for {
		var oo fuse.OpenOut
		s := e.fs.Open(nil, &fuse.OpenIn{InHeader: hdr(f), Flags: unix.O_RDONLY}, &oo)
		if s == fuse.Status(unix.ENFILE) {
			break
		}
		if !s.Ok() {
			t.Fatalf("open %d: %v (the process ran out before the budget)", len(fhs), s)
		}
		fhs = append(fhs, oo.Fh)
	}
	var own []int
	defer func() {
		for _, fd := range own {
			unix.Close(fd)
		}
	}()
	for i := 0; i < 100; i++ {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("after the guest took its %d fds the daemon could open only %d of its own: %v", len(fhs), i, err)
		}
		own = append(own, fd)
	}
	t.Logf("guest budget %d of RLIMIT_NOFILE 1024", len(fhs))
}

// TestDefaultBudgetByHandleMode: the default MaxOpenFiles sets the O_PATH
// LRU's share of RLIMIT_NOFILE aside only when inodes have file handles
// (only then does the LRU hold fds); without, every inode's fd is pinned
// and counted in the budget, which gets that share too.
func TestDefaultBudgetByHandleMode(t *testing.T) {
	const lru = 100
	for _, tc := range []struct {
		mode    string
		handles bool
	}{{HandlesNever, false}, {HandlesPrefer, true}} {
		t.Run(tc.mode, func(t *testing.T) {
			e := newEnv(t, Options{InodeFileHandles: tc.mode, FdCacheSize: lru})
			if e.fs.handles != tc.handles {
				testenv.Skipf(t, "file handles on the test directory: %v, want %v", e.fs.handles, tc.handles)
			}
			_, got := e.fs.OpenFiles()
			want := defaultFdBudget(0)
			if tc.handles {
				want = defaultFdBudget(lru)
			}
			if got != want {
				t.Fatalf("budget %d, want %d (RLIMIT_NOFILE less the reserve%s)", got, want, map[bool]string{true: " and the LRU"}[tc.handles])
			}
			if !tc.handles && got != defaultFdBudget(lru)+lru {
				t.Fatalf("budget %d: the LRU's %d fds are still set aside", got, lru)
			}
		})
	}
}
