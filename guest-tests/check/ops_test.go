package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"golang.org/x/sys/unix"
)

// TestReadOnlyOps runs the EROFS list on a read-only bind mount (every op
// refused, nothing changed) and on the writable tree under it (each op
// reported, with its name).
func TestReadOnlyOps(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "bind mounts need root")
	}
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "file"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(src, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	if err := unix.Mount(src, mnt, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	if err := unix.Mount("", mnt, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	m, _, err := Build(mnt, ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir, file := m.ReadOnlyTargets()
	if dir != "empty" || file != "file" {
		t.Fatalf("ReadOnlyTargets = %q, %q; want empty, file", dir, file)
	}
	if errs := ReadOnlyOps(filepath.Join(mnt, dir), filepath.Join(mnt, file)); len(errs) > 0 {
		t.Fatalf("read-only mount: %q", errs)
	}
	if errs := ReadOnlyOps(mnt, ""); len(errs) > 0 {
		t.Fatalf("read-only mount root, no file: %q", errs)
	}
	errs := ReadOnlyOps(filepath.Join(src, dir), filepath.Join(src, file))
	for _, op := range []string{"open O_WRONLY", "setxattr", "link", "mknod fifo", "rmdir", "changed under"} {
		if !strings.Contains(strings.Join(errs, "\n"), op) {
			t.Errorf("writable tree: no error mentions %q: %q", op, errs)
		}
	}
}

func TestCachedPages(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, SeededBytes(1, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(p); err != nil {
		t.Fatal(err)
	}
	resident, pages, err := cachedPages(p, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if want := (1 << 20) / os.Getpagesize(); pages != want || resident != want {
		t.Fatalf("%d of %d pages resident, want %d of %d", resident, pages, want, want)
	}
}
