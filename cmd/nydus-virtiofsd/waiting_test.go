package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWaitingLineOnce: with the log on stderr (the default), the line Kata
// waits for is on stderr once, verbatim, not once more as a log record.
func TestWaitingLineOnce(t *testing.T) {
	bin := buildBinary(t)
	d := startDaemon(t, bin, nil, "--socket-path", filepath.Join(t.TempDir(), "v.sock"), "--shared-dir", shareDir(t))
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.wait(t, 5*time.Second)
	if n := strings.Count(d.log(), "Waiting for vhost-user socket connection"); n != 1 {
		t.Errorf("stderr carries the waiting line %d times, want 1:\n%s", n, d.log())
	}
}
