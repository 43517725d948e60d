package vfs

import (
	"bufio"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/hostmount"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/passthrough"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

const fixtureDir = "../rafs/testdata/fixtures/nydus/v5-repeatable"

func quiet() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// rafsMount opens the v5 fixture image as a mount; closed counts closes.
func rafsMount(t testing.TB, closed *atomic.Int32) Mount {
	t.Helper()
	img, err := rafs.Open(filepath.Join(fixtureDir, "sha256-nocompress-repeatable"),
		rafs.Options{Backend: backend.NewLocalFS(filepath.Join(fixtureDir, "blobs"))})
	if err != nil {
		t.Fatal(err)
	}
	return Mount{FS: rafs.NewFS(img, rafs.FSOptions{}), Type: "Rafs", Close: func() error {
		if closed != nil {
			closed.Add(1)
		}
		return img.Close()
	}}
}

func passthroughMount(t testing.TB, dir string) Mount {
	t.Helper()
	fs, err := passthrough.New(dir, passthrough.Options{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	return Mount{FS: fs, Type: "PassthroughFs"}
}

// fixtureMD5s reads the md5sum lines of the fixture's .result file.
func fixtureMD5s(t testing.TB) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(fixtureDir, "sha256-nocompress-repeatable.result"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	re := regexp.MustCompile(`^([0-9a-f]{32})\s+(\S+)$`)
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			out[strings.TrimPrefix(m[2], ".")] = m[1]
		}
	}
	if len(out) == 0 {
		t.Fatal("no md5 lines in the fixture result")
	}
	return out
}

func md5File(p string) (string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	s := md5.Sum(b)
	return hex.EncodeToString(s[:]), nil
}

// kernelMount serves v through /dev/fuse at a temporary directory.
func kernelMount(t testing.TB, v *VFS) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "kernel FUSE mount needs root (DirectMount)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Skip(t, "no /dev/fuse")
	}
	mnt := t.TempDir()
	srv, err := hostmount.Mount(v, mnt, &fuse.MountOptions{FsName: "vfs", Name: "vfs", DirectMount: true, MaxReadAhead: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return mnt
}

func names(t testing.TB, dir string) string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range es {
		n = append(n, e.Name())
	}
	sort.Strings(n)
	return strings.Join(n, " ")
}

func ino(t testing.TB, p string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestKernelKataLayout mounts a share at /containers and images at
// /rafs/<cid>/lowerdir while the kernel walks them, as Kata does.
func TestKernelKataLayout(t *testing.T) {
	v := New(Options{NoCache: true, Logger: quiet()})
	mnt := kernelMount(t, v)
	if got := names(t, mnt); got != "" {
		t.Fatalf("empty root lists %q", got)
	}
	share := t.TempDir()
	if err := os.WriteFile(filepath.Join(share, "hello"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := v.Mount("/containers", passthroughMount(t, share)); err != nil {
		t.Fatal(err)
	}
	var closed atomic.Int32
	if err := v.Mount("/rafs/c1/lowerdir", rafsMount(t, &closed)); err != nil {
		t.Fatal(err)
	}
	if got := names(t, mnt); got != "containers rafs" {
		t.Fatalf("root lists %q", got)
	}
	if got := names(t, filepath.Join(mnt, "rafs")); got != "c1" {
		t.Fatalf("/rafs lists %q", got)
	}
	// The share is writable through the table.
	if err := os.WriteFile(filepath.Join(mnt, "containers", "new"), []byte("written"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(share, "new")); err != nil || string(b) != "written" {
		t.Fatalf("host sees %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "containers", "hello")); err != nil || string(b) != "hi" {
		t.Fatalf("read %q, %v", b, err)
	}
	// The image reads right.
	low := filepath.Join(mnt, "rafs", "c1", "lowerdir")
	sums := fixtureMD5s(t)
	for p, want := range sums {
		got, err := md5File(filepath.Join(low, p))
		if err != nil || got != want {
			t.Fatalf("%s: md5 %s, %v; want %s", p, got, err, want)
		}
	}
	// The pseudo directories are read-only.
	if err := os.Mkdir(filepath.Join(mnt, "rafs", "x"), 0o755); !errors.Is(err, syscall.EROFS) {
		t.Errorf("mkdir in a pseudo directory: %v, want EROFS", err)
	}
	// Inode numbers are unique across mounts.
	seen := map[uint64]string{}
	for _, p := range []string{mnt, filepath.Join(mnt, "rafs"), filepath.Join(mnt, "containers"), low, filepath.Join(mnt, "containers", "hello")} {
		i := ino(t, p)
		if q, ok := seen[i]; ok {
			t.Errorf("%s and %s share inode %d", p, q, i)
		}
		seen[i] = p
	}
	// A second image appears while the first is in use.
	if err := v.Mount("/rafs/c2/lowerdir", rafsMount(t, nil)); err != nil {
		t.Fatal(err)
	}
	if got := names(t, filepath.Join(mnt, "rafs")); got != "c1 c2" {
		t.Fatalf("/rafs lists %q", got)
	}
	// An image that goes away is closed once no request holds it, and a
	// file of it that is open (not yet read, so not in the page cache)
	// answers an error.
	var file string
	for p := range sums {
		file = p
		break
	}
	if err := v.Mount("/rafs/c3/lowerdir", rafsMount(t, &closed)); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(mnt, "rafs", "c3", "lowerdir", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, c := range []string{"c1", "c3"} {
		if err := v.Umount("/rafs/" + c + "/lowerdir"); err != nil {
			t.Fatal(err)
		}
	}
	if closed.Load() != 2 {
		t.Errorf("images closed %d times after umount, want 2", closed.Load())
	}
	if _, err := f.ReadAt(make([]byte, 1<<20), 0); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("read of an unmounted image's file: %v, want ENOENT", err)
	}
	if got := names(t, filepath.Join(mnt, "rafs")); got != "c2" {
		t.Fatalf("/rafs lists %q after umount", got)
	}
	if _, err := os.Stat(low); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("stat of the unmounted path: %v, want ENOENT", err)
	}
	got, err := md5File(filepath.Join(mnt, "rafs", "c2", "lowerdir", file))
	if err != nil || got != sums[file] {
		t.Fatalf("c2 %s: md5 %s, %v", file, got, err)
	}
	if err := v.Umount("/rafs/c2/lowerdir"); err != nil {
		t.Fatal(err)
	}
	if got := names(t, mnt); got != "containers" {
		t.Fatalf("root lists %q after the images went", got)
	}
}

// TestKernelRootMount serves a share at "/" (nydusd --shared-dir with the
// default --virtual-mountpoint).
func TestKernelRootMount(t *testing.T) {
	v := New(Options{NoCache: true, Logger: quiet()})
	share := t.TempDir()
	if err := os.Mkdir(filepath.Join(share, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(share, "sub", "f"), []byte("root mount"), 0o644); err != nil {
		t.Fatal(err)
	}
	hostIno := ino(t, filepath.Join(share, "sub", "f"))
	if err := v.Mount("/", passthroughMount(t, share)); err != nil {
		t.Fatal(err)
	}
	mnt := kernelMount(t, v)
	if got := names(t, mnt); got != "sub" {
		t.Fatalf("root lists %q", got)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "sub", "f")); err != nil || string(b) != "root mount" {
		t.Fatalf("read %q, %v", b, err)
	}
	if got := ino(t, filepath.Join(mnt, "sub", "f")); got != hostIno {
		t.Errorf("st_ino %d under a root mount, want the host's %d", got, hostIno)
	}
	if err := v.Mount("/containers", passthroughMount(t, share)); !errors.Is(err, ErrNested) {
		t.Errorf("mount beside a root mount: %v, want ErrNested", err)
	}
}

func TestMountErrors(t *testing.T) {
	share := t.TempDir()
	tests := []struct {
		name   string
		setup  []string
		op     func(v *VFS) error
		target error
	}{
		{"occupied", []string{"/containers"}, func(v *VFS) error { return v.Mount("/containers", passthroughMount(t, share)) }, ErrExist},
		{"occupied after clean", []string{"/a/b"}, func(v *VFS) error { return v.Mount("/a//b/", passthroughMount(t, share)) }, ErrExist},
		{"nested", []string{"/containers"}, func(v *VFS) error { return v.Mount("/containers/x", passthroughMount(t, share)) }, ErrNested},
		{"above mounts", []string{"/rafs/c/lowerdir"}, func(v *VFS) error { return v.Mount("/rafs", passthroughMount(t, share)) }, ErrExist},
		{"root over mounts", []string{"/containers"}, func(v *VFS) error { return v.Mount("/", passthroughMount(t, share)) }, ErrExist},
		{"root twice", []string{"/"}, func(v *VFS) error { return v.Mount("/", passthroughMount(t, share)) }, ErrExist},
		{"relative", nil, func(v *VFS) error { return v.Mount("containers", passthroughMount(t, share)) }, ErrPath},
		{"umount unknown", nil, func(v *VFS) error { return v.Umount("/rafs/x/lowerdir") }, ErrNotFound},
		{"umount pseudo dir", []string{"/rafs/c/lowerdir"}, func(v *VFS) error { return v.Umount("/rafs") }, ErrNotFound},
		{"remount unknown", nil, func(v *VFS) error { return v.Remount("/x", passthroughMount(t, share)) }, ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := New(Options{Logger: quiet()})
			for _, p := range tc.setup {
				if err := v.Mount(p, passthroughMount(t, share)); err != nil {
					t.Fatal(err)
				}
			}
			if err := tc.op(v); !errors.Is(err, tc.target) {
				t.Fatalf("got %v, want %v", err, tc.target)
			}
			if err := v.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestIndexesRoundRobin mounts and unmounts more times than there are
// indexes: indexes are reused, as late as possible.
func TestIndexesRoundRobin(t *testing.T) {
	v := New(Options{Logger: quiet()})
	share := t.TempDir()
	if err := v.Mount("/containers", passthroughMount(t, share)); err != nil {
		t.Fatal(err)
	}
	last := 0
	for i := 0; i < 2*MaxMounts; i++ {
		if err := v.Mount("/rafs/c/lowerdir", passthroughMount(t, share)); err != nil {
			t.Fatalf("mount %d: %v", i, err)
		}
		info, err := v.Info("/rafs/c/lowerdir")
		if err != nil {
			t.Fatal(err)
		}
		if info.Index == last || info.Index == 1 {
			t.Fatalf("mount %d got index %d (last %d)", i, info.Index, last)
		}
		last = info.Index
		if err := v.Umount("/rafs/c/lowerdir"); err != nil {
			t.Fatal(err)
		}
	}
	for i := 2; i <= MaxMounts; i++ {
		if err := v.Mount("/m/"+string(rune('a'+i%26))+"/"+strings.Repeat("x", i), passthroughMount(t, share)); err != nil {
			t.Fatalf("mount %d: %v", i, err)
		}
	}
	if err := v.Mount("/full", passthroughMount(t, share)); !errors.Is(err, ErrFull) {
		t.Fatalf("mount beyond %d: %v, want ErrFull", MaxMounts, err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestZeroCopyHeld reads through the table without a kernel: the image's
// file-segment result passes through as one, and an umount closes the
// image only after the transport is done with it.
func TestZeroCopyHeld(t *testing.T) {
	v := New(Options{Logger: quiet()})
	var closed atomic.Int32
	if err := v.Mount("/rafs/c/lowerdir", rafsMount(t, &closed)); err != nil {
		t.Fatal(err)
	}
	cancel := make(chan struct{})
	lookup := func(parent uint64, name string) fuse.EntryOut {
		t.Helper()
		var out fuse.EntryOut
		if st := v.Lookup(cancel, &fuse.InHeader{NodeId: parent}, name, &out); !st.Ok() || out.NodeId == 0 {
			t.Fatalf("lookup %s: %v", name, st)
		}
		return out
	}
	id := lookup(fuse.FUSE_ROOT_ID, "rafs").NodeId
	id = lookup(id, "c").NodeId
	e := lookup(id, "lowerdir")
	if e.NodeId>>IndexShift == 0 || e.NodeId&idMask != fuse.FUSE_ROOT_ID {
		t.Fatalf("mount root node id %#x", e.NodeId)
	}
	e = lookup(e.NodeId, "hardlink-test")
	e = lookup(e.NodeId, "foo")
	if e.NodeId>>IndexShift != 1 || e.Ino>>IndexShift != 1 {
		t.Fatalf("node id %#x, ino %#x: not namespaced", e.NodeId, e.Ino)
	}
	in := &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: e.NodeId}, Size: uint32(e.Size)}
	res, st := v.Read(cancel, in, make([]byte, e.Size))
	if !st.Ok() {
		t.Fatal(st)
	}
	if in.NodeId != e.NodeId {
		t.Errorf("request node id left as %#x", in.NodeId)
	}
	if _, ok := res.(fusewire.SegmentedResult); !ok {
		t.Fatalf("result %T lost its segments", res)
	}
	if err := v.Umount("/rafs/c/lowerdir"); err != nil {
		t.Fatal(err)
	}
	if closed.Load() != 0 {
		t.Fatal("image closed while a read result is out")
	}
	b, st := res.Bytes(make([]byte, e.Size))
	if !st.Ok() || uint64(len(b)) != e.Size {
		t.Fatalf("bytes after umount: %d, %v", len(b), st)
	}
	res.Done()
	if closed.Load() != 1 {
		t.Fatalf("image closed %d times after Done, want 1", closed.Load())
	}
	var a fuse.AttrOut
	if st := v.GetAttr(cancel, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: e.NodeId}}, &a); st != fuse.ENOENT {
		t.Fatalf("getattr on a gone mount: %v, want ENOENT", st)
	}
	v.Forget(e.NodeId, 1) // must not panic
}

// TestKernelChurn reads through the kernel from a stable share and from
// an image that is mounted and unmounted over and over (run with -race).
func TestKernelChurn(t *testing.T) {
	v := New(Options{NoCache: true, Logger: quiet()})
	mnt := kernelMount(t, v)
	share := t.TempDir()
	if err := os.WriteFile(filepath.Join(share, "f"), []byte("stable"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := v.Mount("/containers", passthroughMount(t, share)); err != nil {
		t.Fatal(err)
	}
	sums := fixtureMD5s(t)
	var files []string
	for p := range sums {
		files = append(files, p)
	}
	sort.Strings(files)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var goodReads atomic.Int64
	errc := make(chan error, 8)
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if b, err := os.ReadFile(filepath.Join(mnt, "containers", "f")); err != nil || string(b) != "stable" {
					errc <- errors.New("stable share: " + string(b) + ": " + errString(err))
					return
				}
				p := files[i%len(files)]
				got, err := md5File(filepath.Join(mnt, "rafs", "c", "lowerdir", p))
				if err == nil {
					if got != sums[p] {
						errc <- errors.New(p + ": wrong md5 " + got)
						return
					}
					goodReads.Add(1)
				}
			}
		}(w)
	}
	deadline := time.Now().Add(2 * time.Second)
	rounds := 0
	for time.Now().Before(deadline) || goodReads.Load() == 0 {
		if err := v.Mount("/rafs/c/lowerdir", rafsMount(t, nil)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
		if err := v.Umount("/rafs/c/lowerdir"); err != nil {
			t.Fatal(err)
		}
		rounds++
		if time.Now().After(deadline.Add(20 * time.Second)) {
			break
		}
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	if goodReads.Load() == 0 {
		t.Fatalf("no read of the image succeeded in %d rounds", rounds)
	}
	t.Logf("%d mount rounds, %d good image reads", rounds, goodReads.Load())
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// TestReadAddsNoAllocations: routing a read through the table allocates
// nothing beyond what the filesystem does (the held result is pooled;
// the race detector's pool drops some, hence the slack).
func TestReadAddsNoAllocations(t *testing.T) {
	v := New(Options{Logger: quiet()})
	m := rafsMount(t, nil)
	if err := v.Mount("/rafs/c/lowerdir", m); err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	cancel := make(chan struct{})
	id := uint64(fuse.FUSE_ROOT_ID)
	for _, name := range []string{"rafs", "c", "lowerdir", "hardlink-test", "foo"} {
		var out fuse.EntryOut
		if st := v.Lookup(cancel, &fuse.InHeader{NodeId: id}, name, &out); !st.Ok() || out.NodeId == 0 {
			t.Fatalf("lookup %s: %v", name, st)
		}
		id = out.NodeId
	}
	buf := make([]byte, 4096)
	read := func(fs fuse.RawFileSystem, in *fuse.ReadIn) func() {
		return func() {
			res, st := fs.Read(cancel, in, buf)
			if !st.Ok() {
				t.Fatal(st)
			}
			if _, ok := res.(fusewire.SegmentedResult); !ok {
				t.Fatalf("%T is not a segment result", res)
			}
			res.Done()
		}
	}
	direct := testing.AllocsPerRun(200, read(m.FS, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: id & idMask}, Size: 4096}))
	routed := testing.AllocsPerRun(200, read(v, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: id}, Size: 4096}))
	if routed > direct+0.5 {
		t.Fatalf("a routed read allocates %.1f times, the filesystem alone %.1f", routed, direct)
	}
}

func BenchmarkRead(b *testing.B) {
	v := New(Options{Logger: quiet()})
	if err := v.Mount("/rafs/c/lowerdir", rafsMount(b, nil)); err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	cancel := make(chan struct{})
	id := uint64(fuse.FUSE_ROOT_ID)
	for _, name := range []string{"rafs", "c", "lowerdir", "hardlink-test", "foo"} {
		var out fuse.EntryOut
		v.Lookup(cancel, &fuse.InHeader{NodeId: id}, name, &out)
		id = out.NodeId
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 4096)
		in := &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: id}, Size: 4096}
		for pb.Next() {
			res, _ := v.Read(cancel, in, buf)
			res.Done()
		}
	})
}
