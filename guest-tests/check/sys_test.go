package check

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSysHelpers reads a small tree with every sys* helper, each with its
// buffers on its own or its caller's stack.
func TestSysHelpers(t *testing.T) {
	d := t.TempDir()
	want := map[string]bool{}
	for i := range 40 {
		name := fmt.Sprintf("f%03d", i)
		if err := os.WriteFile(filepath.Join(d, name), bytes.Repeat([]byte{byte(i)}, i), 0o644); err != nil {
			t.Fatal(err)
		}
		want[name] = true
	}
	seen := 0
	if err := sysWalkDir(d, func(n string) error {
		if !want[n] {
			return fmt.Errorf("unexpected name %q", n)
		}
		seen++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if seen != len(want) {
		t.Fatalf("sysWalkDir saw %d of %d names", seen, len(want))
	}
	var st unix.Stat_t
	if err := sysLstat(filepath.Join(d, "f039"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 39 || st.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Fatalf("sysLstat f039: size %d mode %o, want a 39-byte file", st.Size, st.Mode)
	}
	var buf [16]byte
	var got []byte
	n, err := sysReadFile(filepath.Join(d, "f039"), buf[:], func(b []byte) { got = append(got, b...) })
	if err != nil {
		t.Fatal(err)
	}
	if n != 39 || !bytes.Equal(got, bytes.Repeat([]byte{39}, 39)) {
		t.Fatalf("sysReadFile f039: %d bytes %v", n, got)
	}
}

// TestSysCallsUnderMovingStacks runs the sys* helpers' tests again in a
// build that moves the goroutine's stack at every function call
// (-d=maymorestack=runtime.mayMoreStackMove). The helpers hand buffers to
// the kernel as uintptr values (sysCall); a buffer left on a stack that
// moved inside the call would be filled at its old address and read back
// as zeros. Without go:uintptrescapes on sysCall this build's walks saw no
// names at all; in real guests it happened only when a GC shrank the stack
// at the wrong moment (one getdents batch of one directory lost).
func TestSysCallsUnderMovingStacks(t *testing.T) {
	pkg := "github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
	cmd := exec.Command("go", "test", "-count=1",
		"-gcflags="+pkg+"=-d=maymorestack=runtime.mayMoreStackMove",
		"-run", "^(TestSysHelpers|TestWalkDirMatchesReadDir)$", "-v", ".")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, name := range []string{"TestSysHelpers", "TestWalkDirMatchesReadDir"} {
		if !bytes.Contains(out, []byte("--- PASS: "+name+" ")) {
			t.Fatalf("%s did not pass under moving stacks:\n%s", name, out)
		}
	}
}
