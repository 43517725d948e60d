package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// binDir holds the binary built once for the package's tests.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nydus-virtiofsd-test.")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var build struct {
	once sync.Once
	out  []byte
	err  error
}

// buildBinary builds the command once per test run and returns its path.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(binDir, "nydus-virtiofsd")
	build.once.Do(func() {
		build.out, build.err = exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	})
	if build.err != nil {
		t.Fatalf("go build: %v\n%s", build.err, build.out)
	}
	return bin
}
