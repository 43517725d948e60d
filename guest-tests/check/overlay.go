package check

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// KindOverlay builds an overlayfs in the guest as Kata's agent builds a
// container rootfs: lowerdir Step.Lower (an image, laid out by
// OverlayLower), upperdir and workdir under Dir (a writable share). It
// checks copy-up, a whiteout and an opaque directory, through an unmount
// and a second mount; OverlayOnHost checks what landed on the host.
const KindOverlay = "overlay"

// OverlayLower writes the lower layer KindOverlay expects into dir.
func OverlayLower(dir string) error {
	files := map[string]string{
		"keep.txt": "lower keep\n", "change.txt": "lower\n", "gone.txt": "deleted in the overlay\n",
		"dir/a": "a\n", "dir/b": "b\n",
	}
	for p, s := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, []byte(s), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// overlayMerged is the expected merged view after OverlayOps.
var overlayMerged = map[string]string{
	"keep.txt": "lower keep\n", "change.txt": "lower\nupper\n", "fresh.txt": "new in the upper layer\n",
	"dir/new": "only entry of an opaque directory\n",
}

// OverlayOps mounts the overlay on mnt (a directory of the guest's own
// root) and checks it; the upper layer stays under upperBase.
func OverlayOps(lower, upperBase, mnt string) []string {
	var e Errs
	upper, work := filepath.Join(upperBase, "upper"), filepath.Join(upperBase, "work")
	for _, d := range []string{upper, work, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			e.Addf("mkdir %s: %v", d, err)
			return e.Strings()
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,index=off", lower, upper, work)
	mount := func() bool {
		if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
			e.Addf("mount -t overlay -o %s: %v", opts, err)
			return false
		}
		return true
	}
	if !mount() {
		return e.Strings()
	}
	m := func(p string) string { return filepath.Join(mnt, filepath.FromSlash(p)) }
	steps := []struct {
		what string
		do   func() error
	}{
		{"copy-up by append", func() error { return appendFile(m("change.txt"), []byte("upper\n")) }},
		{"whiteout by unlink", func() error { return os.Remove(m("gone.txt")) }},
		{"remove a lower directory", func() error { return os.RemoveAll(m("dir")) }},
		{"opaque directory by mkdir", func() error { return os.Mkdir(m("dir"), 0o755) }},
		{"create in it", func() error {
			return createExcl(m("dir/new"), []byte(overlayMerged["dir/new"]), 0o644)
		}},
		{"create", func() error { return createExcl(m("fresh.txt"), []byte(overlayMerged["fresh.txt"]), 0o644) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			e.Addf("%s: %v", s.what, err)
			_ = unix.Unmount(mnt, 0)
			return e.Strings()
		}
	}
	overlayView(&e, mnt, "first mount")
	// the layers from the guest's side: the lower untouched, the upper
	// holding the copy, the whiteout and the opaque directory
	if b, err := os.ReadFile(filepath.Join(lower, "change.txt")); err != nil || string(b) != "lower\n" {
		e.Addf("lower change.txt after copy-up: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(upper, "change.txt")); err != nil || string(b) != overlayMerged["change.txt"] {
		e.Addf("upper change.txt: %q %v", b, err)
	}
	if err := IsWhiteout(filepath.Join(upper, "gone.txt")); err != nil {
		e.Addf("guest: %v", err)
	}
	if v, err := getXattr(filepath.Join(upper, "dir"), "trusted.overlay.opaque"); err != nil || v != "y" {
		e.Addf("guest: upper dir trusted.overlay.opaque = %q, %v; want \"y\"", v, err)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		e.Addf("umount overlay: %v", err)
		return e.Strings()
	}
	_ = DropCaches()
	if mount() {
		overlayView(&e, mnt, "second mount")
		if err := unix.Unmount(mnt, 0); err != nil {
			e.Addf("umount overlay (second): %v", err)
		}
	}
	return e.Strings()
}

// overlayView compares the merged directory with overlayMerged.
func overlayView(e *Errs, mnt, when string) {
	got := map[string]string{}
	err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(mnt, p)
		got[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		e.Addf("%s: walk: %v", when, err)
	}
	for p, want := range overlayMerged {
		if got[p] != want {
			e.Addf("%s: merged %s = %q, want %q", when, p, got[p], want)
		}
	}
	for p := range got {
		if _, ok := overlayMerged[p]; !ok {
			e.Addf("%s: merged view has %s, which was deleted or hidden", when, p)
		}
	}
}

// IsWhiteout checks that p is overlayfs's whiteout: a 0/0 character device.
func IsWhiteout(p string) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fmt.Errorf("whiteout %s: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		return fmt.Errorf("whiteout %s: mode %o rdev %d, want a 0/0 character device", p, st.Mode, st.Rdev)
	}
	return nil
}

// OverlayOnHost checks, on the host, the upper layer OverlayOps left under
// upperBase when the daemon maps the guest's trusted.* to mappedPrefix+
// "trusted.*" (e.g. "user.virtiofs."): the whiteout, the opaque mark
// stored under the mapped name, and no trusted.* xattr anywhere under root.
func OverlayOnHost(root, upperBase, mappedPrefix string) []string {
	var e Errs
	upper := filepath.Join(upperBase, "upper")
	if err := IsWhiteout(filepath.Join(upper, "gone.txt")); err != nil {
		e.Addf("host: %v", err)
	}
	name := mappedPrefix + "trusted.overlay.opaque"
	if v, err := getXattr(filepath.Join(upper, "dir"), name); err != nil || v != "y" {
		e.Addf("host: upper dir %s = %q, %v; want \"y\"", name, v, err)
	}
	if b, err := os.ReadFile(filepath.Join(upper, "change.txt")); err != nil || string(b) != overlayMerged["change.txt"] {
		e.Addf("host: upper change.txt: %q %v", b, err)
	}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		names, err := allXattrs(p)
		if err != nil {
			return err
		}
		for _, n := range names {
			if strings.HasPrefix(n, "trusted.") {
				e.Addf("host: %s carries %s (the guest's trusted.* must not land as trusted.* on the host)", p, n)
			}
		}
		return nil
	})
	if err != nil {
		e.Addf("host walk: %v", err)
	}
	return e.Strings()
}

// allXattrs lists every xattr name of p (not only user.*).
func allXattrs(p string) ([]string, error) {
	b := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, b)
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listxattr %s: %w", p, err)
	}
	var names []string
	for _, s := range bytes.Split(b[:n], []byte{0}) {
		if len(s) > 0 {
			names = append(names, string(s))
		}
	}
	return names, nil
}
