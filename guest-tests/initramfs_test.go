package guesttests

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRemoveStaleInitramfs: only images other than the current one that
// nobody wrote or reused for staleInitramfs go; a newer image built by
// another test process must not delete one still being booted.
func TestRemoveStaleInitramfs(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	files := map[string]time.Time{
		"initramfs-current.img": now.Add(-3 * staleInitramfs),
		"initramfs-inuse.img":   now.Add(-time.Minute),
		"initramfs-old.img":     now.Add(-staleInitramfs - time.Minute),
		"vmlinux-x":             now.Add(-3 * staleInitramfs),
	}
	for name, mt := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	removeStaleInitramfs(dir, filepath.Join(dir, "initramfs-current.img"), now.Add(-staleInitramfs))
	for name := range files {
		_, err := os.Stat(filepath.Join(dir, name))
		if gone := os.IsNotExist(err); gone != (name == "initramfs-old.img") {
			t.Errorf("%s: removed=%v (%v)", name, gone, err)
		}
	}
}
