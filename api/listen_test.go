package api

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestListenSocketMode: the API socket is 0600 even under umask 000.
func TestListenSocketMode(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "api.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Fatalf("API socket mode %#o under umask 000, want 0600", m)
	}
}
