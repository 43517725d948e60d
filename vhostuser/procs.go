package vhostuser

import (
	"runtime"
	"sync"
)

// ProcReserve gives the Go scheduler one more P (GOMAXPROCS) for each
// queue leader that sleeps blocked in ppoll(2) (KickWaitPpoll,
// KickWaitInlinePpoll), and takes it back when the queue stops.
//
// A goroutine in a blocking system call keeps its P until the runtime's
// monitor (sysmon) takes it back. With as many Ps as CPUs, a 2-CPU host
// and two leaders asleep (the hiprio queue and a request queue), no P is
// idle whenever a request is served, so sysmon takes the sleeping
// leaders' Ps at every tick, wakes a spare thread to hold each, and keeps
// polling at its fastest rate (20 µs) since it found work: measured with
// BenchmarkPerOpVsC, 20 context switches per READDIRPLUS of 100 new
// entries instead of 9, and 4-9 % of the round trip of READDIRPLUS and
// GETATTR (docs/benchmarks.md, issue 15). With a P per sleeper, the CPUs
// keep their Ps for the goroutines that run.
//
// One ProcReserve serves a process (GOMAXPROCS is the process's); nil
// reserves nothing, as in tests that run daemons inside the test binary.
type ProcReserve struct {
	mu sync.Mutex
}

// add moves GOMAXPROCS by delta, serialized with the reserve's other
// changes.
func (p *ProcReserve) add(delta int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := runtime.GOMAXPROCS(0) + delta; n >= 1 {
		runtime.GOMAXPROCS(n)
	}
}
