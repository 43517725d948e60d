package vhostuser

import (
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

// TestTraceRecordsSignalFate: a signal written with no call eventfd
// installed, or to one swapped and closed under the write, is dropped
// silently by design (the frontend signals the next one itself); the trace
// must say so, with the call eventfd's generation, so a dump tells a
// dropped signal from a sent one.
func TestTraceRecordsSignalFate(t *testing.T) {
	v := newVring(1)
	r := &runner{v: v, tr: v.trace}
	r.signal() // no call eventfd yet
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	v.setCall(wr) // generation 1, written once
	r.signal()
	wr.Close() // closed under a writer that still holds it
	_, err = wr.Write(eventOne[:])
	v.noteSignal(v.callGen.Load(), err)
	got := v.trace.dump(0)
	for _, want := range []string{"signal call#0 NO-CALL-FD", "signal call#1 written", "signal call#1 CLOSED"} {
		if !strings.Contains(got, want) {
			t.Errorf("trace lacks %q:\n%s", want, got)
		}
	}
	if v.lastSignal.Load() == 0 {
		t.Error("the time of the last signal written was not kept")
	}
}

// TestTraceConcurrentWritersKeepTheLastEvents: pushes record from every
// worker at once; a dump afterwards holds the last traceLen events, each
// whole, oldest first.
func TestTraceConcurrentWritersKeepTheLastEvents(t *testing.T) {
	tr := newTrace()
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				tr.add(evPush, uint16(w), uint16(i), 7, 1)
			}
		}(w)
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSpace(tr.dump(0)), "\n")
	if len(lines) != traceLen {
		t.Fatalf("%d events dumped, want %d", len(lines), traceLen)
	}
	for _, l := range lines {
		if !strings.Contains(l, "push head=") || !strings.HasSuffix(l, "used_event=7 notify=1") {
			t.Fatalf("torn or foreign event %q", l)
		}
	}
	if n := len(strings.Split(strings.TrimSpace(tr.dump(10)), "\n")); n != 10 {
		t.Errorf("dump(10) gave %d events", n)
	}
	var nilTrace *trace
	nilTrace.add(evKick, 0, 0, 0, 0) // a vring without a trace records nothing
}

// TestIdleVerdicts: the idle check's explanation of a stuck queue, from
// the trace and the ring state, for each case docs/notifications.md
// tells apart.
func TestIdleVerdicts(t *testing.T) {
	st := func(availIdx, usedEvent, usedIdx uint16) virtqueue.RingState {
		return virtqueue.RingState{AvailIdx: availIdx, UsedEvent: usedEvent, UsedIdx: usedIdx, EventIdx: true}
	}
	for _, tc := range []struct {
		name   string
		events func(*trace)
		state  virtqueue.RingState
		kick   bool // a kick is in the eventfd
		want   string
	}{
		{"reaping", func(tr *trace) { tr.add(evPush, 3, 41, 40, 1) }, st(41, 0, 41), false, verdictReaping},
		{"signalled", func(tr *trace) { tr.add(evPush, 3, 41, 40, 1) }, st(41, 40, 41), false, verdictSignalled},
		{"reordered", func(tr *trace) { tr.add(evPush, 3, 41, 0, 0) }, st(41, 40, 41), false, verdictGuestReorder},
		{"no-push", func(tr *trace) { tr.add(evPush, 3, 39, 38, 1) }, st(41, 40, 41), false, verdictNoPush},
		{"kick-late", func(tr *trace) { tr.add(evEnable, 7, 7, 0, 0) }, st(8, 7, 7), true, verdictKickLate},
		{"kick-missing", func(tr *trace) { tr.add(evEnable, 7, 7, 0, 0) }, st(8, 7, 7), false, verdictKickMissing},
		{"kick-unknown", func(tr *trace) {}, st(8, 7, 7), false, verdictKickUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTrace()
			tc.events(tr)
			var got string
			if strings.HasPrefix(tc.name, "kick") {
				got = tr.unkickedVerdict(tc.state, tc.kick)
			} else {
				got = tr.unreapedVerdict(tc.state)
			}
			if got != tc.want {
				t.Errorf("verdict %q, want %q", got, tc.want)
			}
		})
	}
}
