package vhostuser

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

// trace keeps the last notification events of one vring in a fixed ring
// buffer, so that a queue found stuck (or the idle check recovering one)
// can say what happened just before: kicks read, kick re-arms, pops,
// pushes with the driver's used_event and the signal decision, call
// eventfd writes and the vhost-user messages that touched the ring.
// Recording is lock-free and allocates nothing: one atomic add on the
// event counter and three atomic stores per event. Several goroutines
// record at once (pushes come from every worker), so an event being
// overwritten while a dump reads it is skipped by its sequence number.
type trace struct {
	start time.Time
	n     atomic.Uint64
	ev    [traceLen]traceEvent
}

// traceLen is the number of events kept per vring (a power of two).
const traceLen = 512

type traceEvent struct {
	seq  atomic.Uint64 // 0 while being written
	at   atomic.Int64  // nanoseconds since trace.start
	data atomic.Uint64 // kind | a<<8 | b<<24 | c<<40 | flag<<56
}

type traceKind uint8

const (
	evKick     traceKind = iota + 1 // a kick read from the kick eventfd
	evIdleWake                      // a wait for a kick ended by the idle bound
	evEnable                        // EnableNotify: a = avail_event written, b = avail idx seen, flag = pending
	evPop                           // a = head, b = lastAvail after the pop
	evPush                          // a = head, b = new used idx, c = used_event (or avail flags) read, flag = notify
	evSignal                        // call eventfd write: a = call generation, flag = signalResult
	evIdle                          // idle check: a = used idx, b = used_event, flag = signalled
	evMsg                           // vhost-user message: a = request, b = its number (base, enable, flags)
	evStart                         // runner started: a = base, b = used idx
	evStop                          // runner stopping
)

// signalResult says what became of one call eventfd write.
const (
	sigWritten uint8 = iota
	sigNoCall        // no call eventfd installed: the signal is dropped
	sigClosed        // the call eventfd was swapped and closed under the write
	sigFailed        // the write failed otherwise
)

func newTrace() *trace { return &trace{start: time.Now()} }

// add records one event. A nil trace records nothing.
func (t *trace) add(k traceKind, a, b, c uint16, flag uint8) {
	if t == nil {
		return
	}
	i := t.n.Add(1)
	e := &t.ev[i%traceLen]
	e.seq.Store(0)
	e.at.Store(int64(time.Since(t.start)))
	e.data.Store(uint64(k) | uint64(a)<<8 | uint64(b)<<24 | uint64(c)<<40 | uint64(flag)<<56)
	e.seq.Store(i)
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// dump formats the recorded events, oldest first, each with how long
// before now it happened, followed by state (the guest-visible ring state
// at the time of the dump).
func (t *trace) dump(last int) string {
	if t == nil {
		return ""
	}
	now := int64(time.Since(t.start))
	n := t.n.Load()
	if last <= 0 || last > traceLen {
		last = traceLen
	}
	first := uint64(1)
	if n > uint64(last) {
		first = n - uint64(last) + 1
	}
	var sb strings.Builder
	for i := first; i <= n; i++ {
		e := &t.ev[i%traceLen]
		at, d := e.at.Load(), e.data.Load()
		if e.seq.Load() != i {
			continue // overwritten meanwhile
		}
		k := traceKind(d)
		a, b, c, f := uint16(d>>8), uint16(d>>24), uint16(d>>40), uint8(d>>56)
		fmt.Fprintf(&sb, "-%.3fms ", float64(now-at)/1e6)
		switch k {
		case evKick:
			sb.WriteString("kick")
		case evIdleWake:
			sb.WriteString("idle-wake")
		case evEnable:
			fmt.Fprintf(&sb, "enable avail_event=%d avail=%d pending=%d", a, b, f)
		case evPop:
			fmt.Fprintf(&sb, "pop head=%d last_avail=%d", a, b)
		case evPush:
			fmt.Fprintf(&sb, "push head=%d used=%d used_event=%d notify=%d", a, b, c, f)
		case evSignal:
			fmt.Fprintf(&sb, "signal call#%d %s", a, [...]string{"written", "NO-CALL-FD", "CLOSED", "FAILED"}[f&3])
		case evIdle:
			fmt.Fprintf(&sb, "idle-check used=%d used_event=%d signalled=%d", a, b, f)
		case evMsg:
			fmt.Fprintf(&sb, "msg %s num=%d", RequestName(uint32(a)), b)
		case evStart:
			fmt.Fprintf(&sb, "start base=%d used=%d", a, b)
		case evStop:
			sb.WriteString("stop")
		default:
			fmt.Fprintf(&sb, "event%d", k)
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

// ringStateString formats what the guest sees of a ring.
func ringStateString(st virtqueue.RingState, inFlight int, callGen uint64, lastSignal time.Duration) string {
	return fmt.Sprintf("avail.idx=%d avail.flags=%#x used_event=%d used.idx=%d used.flags=%#x avail_event=%d last_avail=%d device_used=%d in_flight=%d call#%d last_signal=-%.3fms",
		st.AvailIdx, st.AvailFlags, st.UsedEvent, st.UsedIdx, st.UsedFlags, st.AvailEvent, st.LastAvail, st.DeviceUsed, inFlight, callGen, float64(lastSignal)/1e6)
}

// dumpOn makes every vring dump its trace when the process receives sig,
// until the returned function is called.
func (s *session) dumpOn(sig os.Signal) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sig)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				for _, v := range s.vrings {
					v.dumpReq.Store(true)
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}

// last returns the newest recorded event of kind k for which match holds,
// looking back at most traceLen events.
func (t *trace) last(k traceKind, match func(a, b, c uint16, f uint8) bool) (a, b, c uint16, f uint8, ok bool) {
	n := t.n.Load()
	for i := n; i > 0 && n-i < traceLen; i-- {
		e := &t.ev[i%traceLen]
		d := e.data.Load()
		if e.seq.Load() != i || traceKind(d) != k {
			continue
		}
		a, b, c, f = uint16(d>>8), uint16(d>>24), uint16(d>>40), uint8(d>>56)
		if match == nil || match(a, b, c, f) {
			return a, b, c, f, true
		}
	}
	return 0, 0, 0, 0, false
}

// Verdicts of the idle check on a queue found stuck, from the trace and
// the ring state (docs/notifications.md says how each is told apart).
const (
	verdictReaping      = "guest-reaping: used_event is the 0 the driver writes while its callbacks are off; it is slow, not waiting for a signal"
	verdictSignalled    = "signalled-not-acted-on: the push that crossed used_event signalled the call eventfd; the guest has not acted on it (late, or lost after the eventfd)"
	verdictGuestReorder = "guest-rearm-reordered: the push that crossed used_event read an older used_event and did not signal; the guest stored used_event only after its re-check of the used index (its barrier did not order them)"
	verdictNoPush       = "unknown: no push crossing used_event in the trace"
	verdictKickLate     = "kick-late: the kick is in the eventfd; the idle bound expired first"
	verdictKickMissing  = "kick-missing: the guest published past the avail_event we had re-armed with, after our re-check saw nothing, and did not kick (its load of avail_event ran before its store of the index, or the VMM dropped the kick)"
	verdictKickUnknown  = "kick-unknown: no re-arm in the trace tells how the chain came without a kick"
)

// unreapedVerdict explains used entries the guest has not reaped after a
// quiet period (EVENT_IDX).
func (t *trace) unreapedVerdict(st virtqueue.RingState) string {
	if st.UsedEvent == 0 && st.UsedIdx != 0 {
		return verdictReaping
	}
	// The push that crossed used_event moved the used index from
	// used_event to used_event+1.
	_, _, wish, notify, ok := t.last(evPush, func(_, b, _ uint16, _ uint8) bool { return b == st.UsedEvent+1 })
	switch {
	case !ok:
		return verdictNoPush
	case notify != 0:
		return verdictSignalled
	case wish != st.UsedEvent:
		return verdictGuestReorder
	}
	return verdictNoPush
}

// unkickedVerdict explains chains found in the available ring after a
// quiet period with no kick read.
func (t *trace) unkickedVerdict(st virtqueue.RingState, kickPending bool) string {
	if kickPending {
		return verdictKickLate
	}
	ev, seen, _, pending, ok := t.last(evEnable, nil)
	if !ok || pending != 0 || seen != ev || st.AvailIdx == ev {
		return verdictKickUnknown
	}
	return verdictKickMissing
}
