package vhostuser

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// TestWaitingLine: Serve announces WaitingLine each time it waits for a
// frontend (again after one leaves, with KeepListening), through
// Options.OnWaiting when set and else in its log, never both.
func TestWaitingLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		hook bool
	}{{"logged", false}, {"OnWaiting", true}} {
		t.Run(tc.name, func(t *testing.T) {
			log, logged := logtest.NewNullLogger()
			waits := make(chan struct{}, 8)
			opts := Options{KeepListening: true, Logger: log}
			if tc.hook {
				opts.OnWaiting = func() { waits <- struct{}{} }
			} else {
				log.AddHook(waitingHook(waits))
			}
			sock := filepath.Join(t.TempDir(), "vu.sock")
			l, err := Listen(sock)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- Serve(ctx, l, nopDevice{}, opts) }()
			next := func(what string) {
				t.Helper()
				select {
				case <-waits:
				case <-time.After(10 * time.Second):
					t.Fatalf("no waiting announcement %s", what)
				}
			}
			next("at start")
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			next("after the frontend left")
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Serve: %v", err)
			}
			n := 0
			for _, e := range logged.AllEntries() {
				if e.Message == WaitingLine {
					n++
				}
			}
			if want := map[bool]int{true: 0, false: 2}[tc.hook]; n != want {
				t.Errorf("WaitingLine logged %d times, want %d", n, want)
			}
		})
	}
}

// waitingHook signals each logged WaitingLine.
type waitingHook chan struct{}

func (waitingHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h waitingHook) Fire(e *logrus.Entry) error {
	if e.Message == WaitingLine {
		h <- struct{}{}
	}
	return nil
}
