package builder

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestUnreadableSourceFile wants a clear error naming a file the builder
// may not read, and no output. As root, the build runs on a thread whose
// effective uid alone is dropped (raw setresuid changes only the calling
// thread); that thread is discarded afterwards.
func TestUnreadableSourceFile(t *testing.T) {
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	must(t, os.MkdirAll(filepath.Join(src, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "ok"), []byte("fine"), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "sub/secret"), []byte("no"), 0o000))
	out := filepath.Join(tmp, "out")
	must(t, os.MkdirAll(out, 0o755))
	must(t, os.Chmod(out, 0o777))
	must(t, os.Chmod(tmp, 0o755))
	must(t, os.Chmod(filepath.Dir(tmp), 0o755)) // t.TempDir makes them 0700

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if os.Geteuid() == 0 {
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 65534, ^uintptr(0)); e != 0 {
				errc <- e
				return
			}
		}
		_, err := Build(context.Background(), src, filepath.Join(out, "boot"), out, Options{Workers: 1})
		errc <- err
	}()
	err := <-errc
	if err == nil || !strings.Contains(err.Error(), "sub/secret") {
		t.Fatalf("error %v, want one naming sub/secret", err)
	}
	if left, _ := os.ReadDir(out); len(left) != 0 {
		t.Errorf("output left behind: %v", left)
	}
}
