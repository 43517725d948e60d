package passthrough

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// env is a shared directory with a sibling "outside" directory that nothing
// may touch, and optionally a host FUSE mount of the share.
type env struct {
	fs      *FS
	share   string
	outside string
	mnt     string
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root (file handles, credential switching, FUSE mounts)")
	}
}

func newEnv(t testing.TB, opts Options) *env {
	t.Helper()
	requireRoot(t)
	base := t.TempDir()
	e := &env{share: filepath.Join(base, "share"), outside: filepath.Join(base, "outside")}
	for _, d := range []string{e.share, e.outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(e.outside, "secret"), []byte("outside secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if opts.Logger == nil {
		l := logrus.New()
		l.SetLevel(logrus.WarnLevel)
		opts.Logger = logrus.NewEntry(l)
	}
	fs, err := New(e.share, opts)
	if err != nil {
		t.Fatal(err)
	}
	e.fs = fs
	t.Cleanup(func() { fs.Close() })
	return e
}

// mountEnv mounts the filesystem on the host through /dev/fuse: the real
// Linux FUSE client, with default_permissions as virtio-fs guests use.
func mountEnv(t testing.TB, opts Options) *env {
	t.Helper()
	return mountEnvWrapped(t, opts, nil)
}

// mountEnvWrapped is mountEnv serving wrap(fs) instead of fs (wrap may be
// nil), for a test that watches the requests the kernel sends.
func mountEnvWrapped(t testing.TB, opts Options, wrap func(fuse.RawFileSystem) fuse.RawFileSystem) *env {
	t.Helper()
	requireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Skipf(t, "/dev/fuse unavailable: %v", err)
	}
	e := newEnv(t, opts)
	e.mnt = filepath.Join(filepath.Dir(e.share), "mnt")
	if err := os.Mkdir(e.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	var served fuse.RawFileSystem = e.fs
	if wrap != nil {
		served = wrap(e.fs)
	}
	srv, err := fuse.NewServer(served, e.mnt, &fuse.MountOptions{
		DirectMount:        true,
		DirectMountStrict:  true,
		AllowOther:         true,
		FsName:             "passthrough-test",
		Name:               "nydus",
		Options:            []string{"default_permissions"},
		DisableReadDirPlus: !opts.ReadDirPlus(),
		MaxWrite:           1 << 20,
	})
	if err != nil {
		testenv.Skipf(t, "cannot mount FUSE: %v", err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return e
}

func (e *env) host(p ...string) string { return filepath.Join(append([]string{e.share}, p...)...) }
func (e *env) via(p ...string) string  { return filepath.Join(append([]string{e.mnt}, p...)...) }

// outsideUntouched checks that the outside directory still holds exactly
// the secret file with its content, link count and mode.
func (e *env) outsideUntouched(t testing.TB) {
	t.Helper()
	ents, err := os.ReadDir(e.outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "secret" {
		var names []string
		for _, de := range ents {
			names = append(names, de.Name())
		}
		t.Fatalf("outside directory changed: %v", names)
	}
	b, err := os.ReadFile(filepath.Join(e.outside, "secret"))
	if err != nil || string(b) != "outside secret" {
		t.Fatalf("outside secret changed: %q %v", b, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(e.outside, "secret"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Nlink != 1 || st.Mode&07777 != 0o644 || st.Uid != 0 {
		t.Fatalf("outside secret metadata changed: nlink %d mode %o uid %d", st.Nlink, st.Mode&07777, st.Uid)
	}
}

// mountIn mounts a fresh fstype filesystem (tmpfs, ramfs: no device)
// with options data on the share's directory rel, until the test ends.
func (e *env) mountIn(t testing.TB, fstype, data, rel string) {
	t.Helper()
	if err := unix.Mount(fstype, e.host(rel), fstype, 0, data); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(e.host(rel), unix.MNT_DETACH) })
}

func hdr(node uint64) fuse.InHeader { return fuse.InHeader{NodeId: node} }

// lookup calls Lookup as a guest would, failing the test on error.
func (e *env) lookup(t testing.TB, parent uint64, name string) fuse.EntryOut {
	t.Helper()
	var out fuse.EntryOut
	h := hdr(parent)
	if s := e.fs.Lookup(nil, &h, name, &out); !s.Ok() {
		t.Fatalf("lookup %q: %v", name, s)
	}
	return out
}

func mustStat(t testing.TB, p string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}
