package check_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/hostmount"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// envFUSEChild makes the test binary the child of TestBuildInProcessFUSE:
// it mounts the image at the directory the variable names.
const envFUSEChild = "NVFS_CHECK_FUSE_CHILD"

// fixtureDir is nydus's v5 "repeatable" fixture (rafs/testdata).
func fixtureDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.Abs(filepath.Join("..", "..", "rafs", "testdata", "fixtures", "nydus", "v5-repeatable"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestBuildInProcessFUSE builds a manifest with checksums of a RAFS image
// mounted with go-fuse in the same process: the walk must not starve the
// FUSE server (see sys.go). The mount and the walk run in a child test
// process with GOMAXPROCS=1 and a GC loop, where a walk that keeps its P
// while blocked on the mount deadlocks at once; the child cannot time
// itself out then (no goroutine runs), so this parent kills it.
//
// Built with -tags nvfsguest (raw system calls) it fails, as it must.
func TestBuildInProcessFUSE(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "kernel FUSE mount needs root (DirectMount)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Skip(t, "no /dev/fuse")
	}
	if mnt := os.Getenv(envFUSEChild); mnt != "" {
		buildOnMount(t, mnt)
		return
	}
	mnt := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestBuildInProcessFUSE$", "-test.v")
	cmd.Env = append(os.Environ(), envFUSEChild+"="+mnt, "GOMAXPROCS=1")
	out, err := cmd.CombinedOutput()
	// a killed server leaves an aborted mount behind
	if uerr := unix.Unmount(mnt, unix.MNT_DETACH); uerr != nil && !errors.Is(uerr, unix.EINVAL) {
		t.Errorf("unmount %s: %v", mnt, uerr)
	}
	if ctx.Err() != nil {
		t.Fatalf("check.Build on an in-process FUSE mount hung (killed after 60s):\n%s", out)
	}
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestBuildInProcessFUSE") {
		t.Fatalf("child did not pass:\n%s", out)
	}
	t.Logf("child:\n%s", out)
}

// buildOnMount is the child: mount, walk with checksums, compare the md5s
// with the fixture's .result file.
func buildOnMount(t *testing.T, mnt string) {
	if runtime.GOMAXPROCS(0) != 1 {
		t.Fatalf("child runs with GOMAXPROCS=%d, want 1", runtime.GOMAXPROCS(0))
	}
	dir := fixtureDir(t)
	img, err := rafs.Open(filepath.Join(dir, "sha256-nocompress-repeatable"), rafs.Options{Backend: backend.NewLocalFS(filepath.Join(dir, "blobs"))})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	srv, err := hostmount.Mount(rafs.NewFS(img, rafs.FSOptions{}), mnt, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	}()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				runtime.GC()
				time.Sleep(time.Millisecond)
			}
		}
	}()
	m, st, err := check.Build(mnt, check.ManifestOptions{Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	want := resultMD5s(t, filepath.Join(dir, "sha256-nocompress-repeatable.result"))
	if len(want) != 23 {
		t.Fatalf(".result lists %d md5s, want 23", len(want))
	}
	got := map[string]string{}
	for _, e := range m.Entries {
		if e.Type == check.TypeFile {
			got[e.Path] = e.Sum
		}
	}
	for p, sum := range want {
		if got[p] != sum {
			t.Errorf("%s: md5 %q, .result says %s", p, got[p], sum)
		}
	}
	t.Logf("%d entries, %d files, %d bytes hashed", st.Entries, st.Files, st.Bytes)
}

// resultMD5s reads the md5sum lines of a nydus .result file (after the
// tree JSON), paths made relative.
func resultMD5s(t *testing.T, p string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	_, sums, ok := strings.Cut(string(b), "\n]\n")
	if !ok {
		t.Fatalf("%s: no end of the tree JSON", p)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(sums))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 {
			out[strings.TrimPrefix(f[1], "/")] = f[0]
		}
	}
	return out
}
