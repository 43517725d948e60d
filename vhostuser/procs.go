package vhostuser

import (
	"os"
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
// The reserve sits on top of the runtime's default GOMAXPROCS, which
// follows the CPU count, the affinity mask and the cgroup's CPU quota (a
// Kata sandbox's quota grows as containers join it). Setting GOMAXPROCS
// stops the runtime's own updates of that default, so while Ps are
// reserved, Refresh (which the daemon calls every few seconds) reads the
// default again and puts the reserve back on top; once no queue runs, the
// default and its updates are restored. A GOMAXPROCS environment variable
// is the fixed base instead.
//
// One ProcReserve serves a process (GOMAXPROCS is the process's); nil
// reserves nothing, as in tests that run daemons inside the test binary.
type ProcReserve struct {
	mu   sync.Mutex
	held int // Ps reserved: leaders asleep in ppoll while their queues run
	base int // GOMAXPROCS without the reserve, while held > 0
}

// add moves the reserve by delta, serialized with its other changes.
func (p *ProcReserve) add(delta int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held == 0 {
		p.base = runtime.GOMAXPROCS(0)
	}
	p.held = max(0, p.held+delta)
	if p.held > 0 {
		runtime.GOMAXPROCS(p.base + p.held)
		return
	}
	if fixedGOMAXPROCS() {
		runtime.GOMAXPROCS(p.base)
	} else {
		runtime.SetDefaultGOMAXPROCS() // the default again, and its updates
	}
}

// Refresh puts the reserve back on top of the runtime's current default
// GOMAXPROCS, which may have changed (CPU quota, affinity, CPUs) since the
// reserve was taken. It does nothing when nothing is reserved (the
// runtime then updates GOMAXPROCS itself) or when the GOMAXPROCS
// environment variable fixes the base.
func (p *ProcReserve) Refresh() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held == 0 || fixedGOMAXPROCS() {
		return
	}
	runtime.SetDefaultGOMAXPROCS()
	p.base = runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(p.base + p.held)
}

// fixedGOMAXPROCS reports whether the environment sets GOMAXPROCS, which
// the runtime's default ignores once SetDefaultGOMAXPROCS is called.
func fixedGOMAXPROCS() bool { return os.Getenv("GOMAXPROCS") != "" }
