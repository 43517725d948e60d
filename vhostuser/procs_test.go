package vhostuser_test

import (
	"runtime"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
)

// TestProcReserve: with Options.Procs, each queue whose leader sleeps in
// ppoll(2) raises GOMAXPROCS by one while it runs (hiprio and a request
// queue: two) and gives it back when it stops; the runtime-poller mode
// and a nil reserve leave GOMAXPROCS alone. Not parallel: GOMAXPROCS is
// the process's.
func TestProcReserve(t *testing.T) {
	base := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(base) })
	for _, tc := range []struct {
		name  string
		mode  vhostuser.KickWait
		procs *vhostuser.ProcReserve
		each  int // Ps per running queue
	}{
		{"inline-ppoll", vhostuser.KickWaitInlinePpoll, &vhostuser.ProcReserve{}, 1},
		{"ppoll", vhostuser.KickWaitPpoll, &vhostuser.ProcReserve{}, 1},
		{"poller", vhostuser.KickWaitPoller, &vhostuser.ProcReserve{}, 0},
		{"no-reserve", vhostuser.KickWaitInlinePpoll, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, vhostuser.Options{RequestQueues: 1, KickWait: tc.mode, Procs: tc.procs})
			d := connect(t, s, testdriver.Options{Sequence: testdriver.QEMU, RequestQueues: 1})
			wantEcho(t, d, 0, []byte("hiprio"), testdriver.Layout{})
			wantEcho(t, d, 1, []byte("request"), testdriver.Layout{})
			if got, want := runtime.GOMAXPROCS(0), base+2*tc.each; got != want {
				t.Fatalf("GOMAXPROCS %d with both queues running, want %d", got, want)
			}
			for q, left := range []int{1, 0} {
				if _, err := d.StopQueue(1 - q); err != nil {
					t.Fatal(err)
				}
				if got, want := runtime.GOMAXPROCS(0), base+left*tc.each; got != want {
					t.Fatalf("GOMAXPROCS %d after queue %d stopped, want %d", got, 1-q, want)
				}
			}
		})
	}
}
