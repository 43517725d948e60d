package passthrough

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// lowerNofile sets the soft RLIMIT_NOFILE of this process (the daemon) for
// the test's duration.
func lowerNofile(t *testing.T, soft uint64) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = soft
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &old) })
}

// makeTree makes dirs directories of files empty files each, on the host.
func makeTree(t *testing.T, root string, dirs, files int) {
	t.Helper()
	for d := 0; d < dirs; d++ {
		dir := filepath.Join(root, "d"+strconv.Itoa(d))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := 0; f < files; f++ {
			fd, err := unix.Open(filepath.Join(dir, "f"+strconv.Itoa(f)), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(fd)
		}
	}
}

func openFds(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// findStat runs find over dir, stat'ing every entry, and returns the number
// of lines, find's stderr and its error.
func findStat(dir string) (int, string, error) {
	var out, errb bytes.Buffer
	cmd := exec.Command("find", dir, "-printf", "%s\n")
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return bytes.Count(out.Bytes(), []byte("\n")), errb.String(), err
}

// findTree runs findStat over a makeTree(dirs, files) tree at dir and
// fails the test unless it lists every entry.
func findTree(t *testing.T, dir string, dirs, files int) {
	t.Helper()
	n, stderr, err := findStat(dir)
	if err != nil || stderr != "" {
		t.Fatalf("find: %v: %s", err, stderr)
	}
	if want := dirs*files + dirs + 1; n != want {
		t.Fatalf("find listed %d entries, want %d", n, want)
	}
}

// TestFdBoundFind: with RLIMIT_NOFILE at 1024, a find over 100,000 files
// through the mount works, and the daemon holds a bounded number of fds
// although the kernel remembers every inode.
func TestFdBoundFind(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 files")
	}
	lowerNofile(t, 1024)
	e := mountEnv(t, Options{Cache: CacheAlways})
	const dirs, files = 100, 1000
	makeTree(t, e.share, dirs, files)
	findTree(t, e.mnt, dirs, files)
	inodes, cached := e.fs.Inodes()
	fds := openFds(t)
	t.Logf("inodes known: %d, cached O_PATH fds: %d (max %d), process fds: %d", inodes, cached, e.fs.fds.max, fds)
	if inodes < dirs*files/2 {
		t.Fatalf("only %d inodes known: the kernel forgot them, the test proves nothing", inodes)
	}
	if cached > e.fs.fds.max || fds >= 1024 {
		t.Fatalf("fds not bounded: %d cached, %d open", cached, fds)
	}
}

// TestFdBoundNeedsHandles shows the failure the handles avoid: with one
// pinned fd per inode the guest uses (InodeFileHandles never, as
// virtiofsd's never mode), reading 2,000 files one by one runs out of
// fds: the guest remembers each inode after closing it, and its pinned
// O_PATH fd stays open until FORGET.
func TestFdBoundNeedsHandles(t *testing.T) {
	lowerNofile(t, 1024)
	e := mountEnv(t, Options{Cache: CacheAlways, InodeFileHandles: HandlesNever})
	makeTree(t, e.share, 4, 500)
	var err error
	for d := 0; d < 4 && err == nil; d++ {
		for f := 0; f < 500 && err == nil; f++ {
			_, err = os.ReadFile(filepath.Join(e.mnt, "d"+strconv.Itoa(d), "f"+strconv.Itoa(f)))
		}
	}
	if err == nil {
		t.Fatal("reading 2,000 files with pinned inodes and 1024 fds succeeded")
	}
	t.Logf("as expected: %v", err)
}

// TestFdBoundListedNever: in never mode too, a find over 2,000 files, or
// a lstat of each of their paths (one LOOKUP each, no listing first), with
// 1024 fds works, since the inodes a listing (READDIRPLUS) or a lookup
// answers get no fd until used (internListed): the daemon holds far fewer
// fds than the guest holds inodes.
func TestFdBoundListedNever(t *testing.T) {
	const dirs, files = 4, 500
	walks := map[string]func(t *testing.T, mnt string){
		"find": func(t *testing.T, mnt string) { findTree(t, mnt, dirs, files) },
		"lstat": func(t *testing.T, mnt string) {
			for d := 0; d < dirs; d++ {
				for f := 0; f < files; f++ {
					if _, err := os.Lstat(filepath.Join(mnt, "d"+strconv.Itoa(d), "f"+strconv.Itoa(f))); err != nil {
						t.Fatal(err)
					}
				}
			}
		},
	}
	for name, walk := range walks {
		t.Run(name, func(t *testing.T) {
			lowerNofile(t, 1024)
			e := mountEnv(t, Options{Cache: CacheAlways, InodeFileHandles: HandlesNever})
			makeTree(t, e.share, dirs, files)
			before := openFds(t)
			walk(t, e.mnt)
			inodes, _ := e.fs.Inodes()
			fds := openFds(t)
			t.Logf("inodes known: %d, listed: %d, process fds: %d (before %d)", inodes, e.fs.listedEntries.Load(), fds, before)
			if inodes < dirs*files {
				t.Fatalf("only %d inodes known: the kernel forgot them, the test proves nothing", inodes)
			}
			if fds-before > 100 {
				t.Fatalf("the daemon holds %d more fds after the walk: listed inodes were pinned", fds-before)
			}
		})
	}
}

func TestRaiseNofileLimit(t *testing.T) {
	lowerNofile(t, 512)
	got, err := RaiseNofileLimit()
	if err != nil {
		t.Fatal(err)
	}
	var lim unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	if got != lim.Max || lim.Cur != lim.Max {
		t.Fatalf("soft limit %d (returned %d), hard %d", lim.Cur, got, lim.Max)
	}
}
