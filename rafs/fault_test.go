package rafs

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestFUSETruncatedBootstrapIsEIO truncates the bootstrap under a host
// FUSE mount: the image's mmap then raises SIGBUS on access, which must
// come back to the reader as EIO while this process (the daemon) lives on.
func TestFUSETruncatedBootstrapIsEIO(t *testing.T) {
	dir := fx("nydus/v5-repeatable")
	boot := filepath.Join(t.TempDir(), "bootstrap")
	src, err := os.Open(filepath.Join(dir, "sha256-nocompress-repeatable"))
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.Create(boot)
	if err == nil {
		_, err = io.Copy(dst, src)
		dst.Close()
	}
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	mnt := mountImage(t, boot, filepath.Join(dir, "blobs"), Options{})
	if _, err := os.ReadDir(mnt); err != nil {
		t.Fatalf("before truncation: %v", err)
	}
	if err := os.Truncate(boot, 0); err != nil {
		t.Fatal(err)
	}
	// Names not looked up yet: the daemon must read the (gone) inode table.
	_, err = os.ReadDir(filepath.Join(mnt, "hardlink-test"))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("readdir after truncation: %v, want EIO", err)
	}
	if _, err := os.Lstat(filepath.Join(mnt, "hardlink-test", "foo")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("stat after truncation: %v, want EIO", err)
	}
}
