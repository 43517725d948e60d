package vhostuser_test

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
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

// TestProcReserveRefresh: the reserve sits on the runtime's current
// default GOMAXPROCS. With the reserve held, the default changes (here:
// the calling thread's CPU affinity narrowed to one CPU, which the
// runtime's default counts, as it counts a cgroup's CPU quota); Refresh
// puts the reserve on the new default, and back when it changes back.
// Once no queue runs, the runtime's default is in force again.
func TestProcReserveRefresh(t *testing.T) {
	t.Setenv("GOMAXPROCS", "") // the base follows the default
	runtime.SetDefaultGOMAXPROCS()
	t.Cleanup(runtime.SetDefaultGOMAXPROCS)
	base := runtime.GOMAXPROCS(0)
	if base < 2 {
		testenv.Skip(t, "needs 2 CPUs: the test narrows the default to one")
	}
	procs := &vhostuser.ProcReserve{}
	s := startServer(t, vhostuser.Options{RequestQueues: 1, KickWait: vhostuser.KickWaitInlinePpoll, Procs: procs})
	d := connect(t, s, testdriver.Options{Sequence: testdriver.QEMU, RequestQueues: 1})
	wantEcho(t, d, 0, []byte("hiprio"), testdriver.Layout{})
	wantEcho(t, d, 1, []byte("request"), testdriver.Layout{})
	if got := runtime.GOMAXPROCS(0); got != base+2 {
		t.Fatalf("GOMAXPROCS %d with both queues running, want %d", got, base+2)
	}

	runtime.LockOSThread()
	var all, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	one.Set(firstCPU(&all))
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	procs.Refresh()
	narrowed := runtime.GOMAXPROCS(0)
	if err := unix.SchedSetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	runtime.UnlockOSThread()
	if narrowed != 1+2 {
		t.Errorf("GOMAXPROCS %d after Refresh with one CPU, want 3 (the default 1, and 2 reserved)", narrowed)
	}
	procs.Refresh()
	if got := runtime.GOMAXPROCS(0); got != base+2 {
		t.Errorf("GOMAXPROCS %d after Refresh with every CPU back, want %d", got, base+2)
	}

	for q := range 2 {
		if _, err := d.StopQueue(1 - q); err != nil {
			t.Fatal(err)
		}
	}
	if got := runtime.GOMAXPROCS(0); got != base {
		t.Errorf("GOMAXPROCS %d with no queue running, want the default %d", got, base)
	}
}

// firstCPU returns the lowest CPU in set.
func firstCPU(set *unix.CPUSet) int {
	for i := range 1024 {
		if set.IsSet(i) {
			return i
		}
	}
	return 0
}
