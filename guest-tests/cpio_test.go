package guesttests

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"golang.org/x/sys/unix"
)

// TestCPIOReadByBusybox writes an archive and has a real cpio (busybox's)
// list and unpack it.
func TestCPIOReadByBusybox(t *testing.T) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		testenv.Skip(t, "no busybox (apt-get install busybox-static)")
	}
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	c.Dir("d", 0o755)
	c.File("d/f", 0o644, []byte("hello"))
	c.File("odd", 0o600, []byte("123")) // not a multiple of 4
	c.Symlink("d/l", "f")
	c.CharDev("d/null", 0o666, 1, 3)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Fatalf("archive of %d bytes is not 4-aligned", buf.Len())
	}
	list := exec.Command(bb, "cpio", "-t", "-v")
	list.Stdin = bytes.NewReader(buf.Bytes())
	out, err := list.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	for _, want := range []string{"drwxr-xr-x", "-rw-r--r--", "d/f", "-rw-------", "odd", "d/l -> f", "crw-rw-rw-"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("listing lacks %q:\n%s", want, out)
		}
	}
	dir := t.TempDir()
	ext := exec.Command(bb, "cpio", "-i", "-d", "-m")
	ext.Dir = dir
	ext.Stdin = bytes.NewReader(buf.Bytes())
	if out, err := ext.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	for p, want := range map[string]string{"d/f": "hello", "odd": "123"} {
		got, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", p, got, err, want)
		}
	}
	if l, err := os.Readlink(filepath.Join(dir, "d/l")); err != nil || l != "f" {
		t.Errorf("d/l -> %q, %v", l, err)
	}
	if os.Geteuid() == 0 {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, "d/null"), &st); err != nil || st.Rdev != unix.Mkdev(1, 3) {
			t.Errorf("d/null: rdev %#x, %v; want 1:3", st.Rdev, err)
		}
	}
}
