package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
)

// TestOverlayOnHost lays out on the host what OverlayOps leaves in the
// upper layer when the daemon maps trusted.* to user.virtiofs.trusted.*,
// and checks that OverlayOnHost accepts it, then rejects a real trusted.*
// xattr, a missing opaque mark and a whiteout that is not a 0/0 device.
func TestOverlayOnHost(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "whiteouts (mknod) and trusted.* xattrs need root")
	}
	root := t.TempDir()
	base := filepath.Join(root, "ovl")
	upper := filepath.Join(base, "upper")
	for _, s := range []func() error{
		func() error { return os.MkdirAll(filepath.Join(upper, "dir"), 0o755) },
		func() error {
			return os.WriteFile(filepath.Join(upper, "change.txt"), []byte(overlayMerged["change.txt"]), 0o644)
		},
		func() error { return unix.Mknod(filepath.Join(upper, "gone.txt"), unix.S_IFCHR|0o000, 0) },
		func() error {
			return unix.Setxattr(filepath.Join(upper, "dir"), "user.virtiofs.trusted.overlay.opaque", []byte("y"), 0)
		},
	} {
		if err := s(); err != nil {
			testenv.Skipf(t, "cannot lay out the upper layer here: %v", err)
		}
	}
	if errs := OverlayOnHost(root, base, "user.virtiofs."); len(errs) > 0 {
		t.Fatalf("a correct upper layer: %v", errs)
	}
	if err := unix.Setxattr(filepath.Join(upper, "change.txt"), "trusted.overlay.origin", []byte("x"), 0); err != nil {
		testenv.Skipf(t, "no trusted.* xattrs here: %v", err)
	}
	errs := OverlayOnHost(root, base, "user.virtiofs.")
	if len(errs) != 1 || !strings.Contains(errs[0], "trusted.overlay.origin") {
		t.Errorf("a trusted.* xattr on the host: %v", errs)
	}
	if errs := OverlayOnHost(root, base, "user.other."); len(errs) < 2 {
		t.Errorf("the opaque mark under another prefix: %v", errs)
	}
	_ = os.Remove(filepath.Join(upper, "gone.txt"))
	if err := os.WriteFile(filepath.Join(upper, "gone.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := IsWhiteout(filepath.Join(upper, "gone.txt")); err == nil {
		t.Error("a regular file taken for a whiteout")
	}
}
