package passthrough

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
)

// TestOverlayUpperOnShare builds what Kata's guest builds for a container
// rootfs in nydusd mode: an overlay whose upper and work directories lie on
// our passthrough share (here the host kernel's overlayfs over a host FUSE
// mount, standing in for the guest's over virtio-fs). With nydusd's xattr
// map, overlayfs's trusted.overlay.* xattrs work from its side and land on
// the host as user.virtiofs.trusted.overlay.*, never as trusted.*:
// copy-up, whiteouts and opaque directories all behave.
func TestOverlayUpperOnShare(t *testing.T) {
	m, err := ParseXattrMap(TrustedToUserXattrMap)
	if err != nil {
		t.Fatal(err)
	}
	e := mountEnv(t, Options{Xattr: true, XattrMap: m, Cache: CacheAuto})
	lower := filepath.Join(filepath.Dir(e.share), "lower")
	merged := filepath.Join(filepath.Dir(e.share), "merged")
	for _, d := range []string{lower, merged, filepath.Join(lower, "dir"), e.via("upper"), e.via("work")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range map[string]string{"keep": "lower keep\n", "change": "lower change\n", "gone": "lower gone\n", "dir/inner": "inner\n"} {
		if err := os.WriteFile(filepath.Join(lower, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if fss, _ := os.ReadFile("/proc/filesystems"); !strings.Contains(string(fss), "\toverlay\n") {
		testenv.Skip(t, "no overlayfs in this kernel")
	}
	opts := "lowerdir=" + lower + ",upperdir=" + e.via("upper") + ",workdir=" + e.via("work")
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("overlayfs with its upper directory on the share: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(merged, unix.MNT_DETACH) })

	// copy-up, whiteout, opaque directory (rmdir then mkdir of a lower one)
	if err := os.WriteFile(filepath.Join(merged, "change"), []byte("upper change\n"), 0o644); err != nil {
		t.Fatalf("copy-up: %v", err)
	}
	if err := os.Remove(filepath.Join(merged, "gone")); err != nil {
		t.Fatalf("whiteout: %v", err)
	}
	if err := os.RemoveAll(filepath.Join(merged, "dir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(merged, "dir"), 0o755); err != nil {
		t.Fatalf("opaque dir: %v", err)
	}
	if err := os.WriteFile(filepath.Join(merged, "dir", "new"), []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		want := map[string]string{"keep": "lower keep\n", "change": "upper change\n", "dir/new": "new\n"}
		for name, body := range want {
			if b, err := os.ReadFile(filepath.Join(merged, name)); err != nil || string(b) != body {
				t.Errorf("%s: merged %s = %q, %v; want %q", when, name, b, err, body)
			}
		}
		for _, name := range []string{"gone", "dir/inner"} {
			if _, err := os.Lstat(filepath.Join(merged, name)); !os.IsNotExist(err) {
				t.Errorf("%s: merged %s still there: %v", when, name, err)
			}
		}
	}
	check("mounted")
	// Remount: what overlayfs wrote to the upper directory reads back.
	if err := unix.Unmount(merged, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("remount: %v", err)
	}
	check("remounted")

	// On the host: the whiteout is a 0/0 character device (or an xattr
	// whiteout), the opaque marker a user.virtiofs.trusted.* xattr, and
	// no trusted.* anywhere in the upper directory.
	var st unix.Stat_t
	if err := unix.Lstat(e.host("upper", "gone"), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 0 {
		if _, xerr := unix.Lgetxattr(e.host("upper", "gone"), "user.virtiofs.trusted.overlay.whiteout", nil); xerr != nil {
			t.Errorf("host whiteout: %v mode %o rdev %d", err, st.Mode, st.Rdev)
		}
	}
	v := make([]byte, 8)
	if n, err := unix.Lgetxattr(e.host("upper", "dir"), "user.virtiofs.trusted.overlay.opaque", v); err != nil || string(v[:n]) != "y" {
		t.Errorf("host opaque marker: %q, %v", v[:max(n, 0)], err)
	}
	filepath.Walk(e.host("upper"), func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		buf := make([]byte, 4096)
		n, _ := unix.Llistxattr(p, buf)
		for _, name := range strings.Split(string(buf[:max(n, 0)]), "\x00") {
			if strings.HasPrefix(name, "trusted.") {
				t.Errorf("host %s carries %s", p, name)
			}
		}
		return nil
	})
}
