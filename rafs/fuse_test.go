package rafs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/hostmount"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
)

// requireFUSE skips when the kernel FUSE client cannot be used (not root
// or no /dev/fuse); everywhere the suite normally runs, both hold.
func requireFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "kernel FUSE mount needs root (DirectMount)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Skip(t, "no /dev/fuse")
	}
}

// mountImage opens boot with blobs in blobDir and mounts it in process.
func mountImage(t *testing.T, boot, blobDir string, opts Options) string {
	t.Helper()
	return mountImageWrapped(t, boot, blobDir, opts, nil)
}

// mountImageWrapped is mountImage serving wrap(the filesystem) (wrap may be
// nil), for a test that watches the requests the kernel sends.
func mountImageWrapped(t *testing.T, boot, blobDir string, opts Options, wrap func(fuse.RawFileSystem) fuse.RawFileSystem) string {
	t.Helper()
	requireFUSE(t)
	if opts.Backend == nil {
		opts.Backend = backend.NewLocalFS(blobDir)
	}
	img, err := Open(boot, opts)
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	var fs fuse.RawFileSystem = NewFS(img, FSOptions{})
	if wrap != nil {
		fs = wrap(fs)
	}
	srv, err := hostmount.Mount(fs, mnt, nil)
	if err != nil {
		img.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		img.Close()
	})
	return mnt
}

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, stderr.String())
	}
	return string(out)
}

func TestFUSEMountV5(t *testing.T) {
	dir := fx("nydus/v5-repeatable")
	mnt := mountImage(t, filepath.Join(dir, "sha256-nocompress-repeatable"), filepath.Join(dir, "blobs"), Options{DigestValidate: true})
	types, targets, md5s := parseResult(t, filepath.Join(dir, "sha256-nocompress-repeatable.result"))

	// find: every path of the .result tree, nothing else.
	var want []string
	for p := range types {
		want = append(want, "."+p)
	}
	want = append(want, ".")
	sort.Strings(want)
	got := strings.Fields(run(t, mnt, "find", ".", "-print"))
	sort.Strings(got)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("find:\n%s\nwant\n%s", strings.Join(got, " "), strings.Join(want, " "))
	}
	// md5sum of every regular file.
	out := run(t, mnt, "sh", "-c", "find . -type f -exec md5sum {} + | sort")
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if md5s[strings.TrimPrefix(f[1], ".")] != f[0] {
			t.Errorf("md5sum: %s", line)
		}
		n++
	}
	if n != len(md5s) {
		t.Errorf("md5sum: %d files, want %d", n, len(md5s))
	}
	// stat: the hard links are one inode with 3 links; symlink targets.
	st := run(t, mnt, "stat", "-c", "%i %h %s %f", "hardlink-test/foo", "hardlink-test/test.sh", "normal-file-test/test.sh")
	lines := strings.Split(strings.TrimSpace(st), "\n")
	if len(lines) != 3 || lines[0] != lines[1] || lines[1] != lines[2] || !strings.HasSuffix(lines[0], " 3 944 81fd") {
		t.Errorf("stat of the hard links: %q", st)
	}
	for p, tg := range targets {
		if got := strings.TrimSpace(run(t, mnt, "readlink", "."+p)); got != tg {
			t.Errorf("readlink %s = %q want %q", p, got, tg)
		}
	}
	// Writes fail with EROFS.
	if err := os.WriteFile(filepath.Join(mnt, "new"), []byte("x"), 0o644); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("create on the image: %v", err)
	}
}

func TestFUSEMountV6(t *testing.T) {
	dir := fx("nydus/v6-2.2")
	mnt := mountImage(t, filepath.Join(dir, "rafs-v6-2.2.boot"), dir, Options{DigestValidate: true})
	out := run(t, mnt, "md5sum", "lib.rs", "sync_io.rs")
	if out != "4709cf8873e419ecedc7d43fdee4a75f  lib.rs\n5442bc7dc9dc5f985c7594e23866ae6f  sync_io.rs\n" {
		t.Errorf("md5sum: %q", out)
	}
	st := run(t, mnt, "stat", "-c", "%n %i %f %s %h %Y %b", ".", "lib.rs", "sync_io.rs")
	want := ". 1 41ed 67 2 0 1\nlib.rs 133 81a4 16931 1 1676819553 34\nsync_io.rs 136 81a4 13400 1 1676819553 27\n"
	if st != want {
		t.Errorf("stat:\n%s\nwant\n%s", st, want)
	}
	// mtime with nanoseconds.
	if ns := run(t, mnt, "stat", "-c", "%y", "lib.rs"); !strings.Contains(ns, ".628661334") {
		t.Errorf("mtime %q lacks its nanoseconds", ns)
	}
}

// TestFUSEMountNoFlush: the real FUSE client closes files of the image
// without a FLUSH each (the open answered FOPEN_NOFLUSH).
func TestFUSEMountNoFlush(t *testing.T) {
	dir := fx("nydus/v6-2.2")
	var flushes *fuseclient.FlushCounter
	mnt := mountImageWrapped(t, filepath.Join(dir, "rafs-v6-2.2.boot"), dir, Options{}, func(fs fuse.RawFileSystem) fuse.RawFileSystem {
		flushes = fuseclient.CountFlushes(fs)
		return flushes
	})
	out := run(t, mnt, "md5sum", "lib.rs", "sync_io.rs", "lib.rs")
	if !strings.HasPrefix(out, "4709cf8873e419ecedc7d43fdee4a75f  lib.rs\n") || strings.Count(out, "\n") != 3 {
		t.Errorf("md5sum: %q", out)
	}
	if n := flushes.N.Load(); n != 0 {
		t.Errorf("%d FLUSH requests for 3 closes, want none", n)
	}
}

func TestFUSEMountXattrs(t *testing.T) {
	mnt := mountImage(t, fx("erofs-utils/meta.img"), "", Options{AllowPlainEROFS: true,
		Backend: &backend.LocalFS{BlobFile: fx("erofs-utils/blob.img")}})
	out := run(t, mnt, "getfattr", "-h", "-R", "-d", "-m", "-", "--absolute-names", ".")
	want := "# file: ./a.txt\nuser.foo=\"bar\"\n\n# file: ./empty-dir\ntrusted.overlay.opaque=\"y\"\n\n"
	if out != want {
		t.Errorf("getfattr:\n%s\nwant\n%s", out, want)
	}
	if out := run(t, mnt, "getfattr", "-n", "user.foo", "--only-values", "a.txt"); out != "bar" {
		t.Errorf("getfattr -n user.foo: %q", out)
	}
	sums := run(t, mnt, "md5sum", "a.txt", "dir1/big.bin", "empty", "link")
	wantSums := "39a9158ab6a210985bd74b9dd8e09b76  a.txt\n7409c0cadc39c378e2bca7fefd5359b7  dir1/big.bin\n" +
		"d41d8cd98f00b204e9800998ecf8427e  empty\n39a9158ab6a210985bd74b9dd8e09b76  link\n"
	if sums != wantSums {
		t.Errorf("md5sum:\n%s", sums)
	}
}

// TestFUSEMountSnapshotterV6 mounts the real-world v6 bootstrap (no blobs:
// metadata only) and walks its 3517 inodes through the kernel: hard links
// stored as separate inodes are one inode, owners follow the
// EXPLICIT_UID_GID rule, reads of absent blobs fail with EIO.
func TestFUSEMountSnapshotterV6(t *testing.T) {
	requireFUSE(t)
	data, err := snapshotterBoot(t, "v6-bootstrap-chunk-pos-438272.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	uid, gid := uint32(4242), uint32(4343)
	img, err := OpenBytes(data, "image.boot", Options{UID: &uid, GID: &gid})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	mnt := t.TempDir()
	srv, err := hostmount.Mount(NewFS(img, FSOptions{}), mnt, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Unmount()
	if n := strings.Count(run(t, mnt, "find", "."), "\n"); n != 3517 {
		t.Errorf("find: %d entries, want 3517", n)
	}
	st := run(t, mnt, "stat", "-c", "%i %h %s %u:%g", "usr/bin/perl", "usr/bin/perl5.34.0")
	l := strings.Split(strings.TrimSpace(st), "\n")
	if len(l) != 2 || l[0] != l[1] || !strings.HasSuffix(l[0], " 2 3806264 4242:4343") {
		t.Errorf("stat of the perl hard links: %q", st)
	}
	if out, err := exec.Command("cat", filepath.Join(mnt, "etc/passwd")).CombinedOutput(); err == nil || !strings.Contains(string(out), "Input/output error") {
		t.Errorf("read without the blob: %v %s", err, out)
	}
}
