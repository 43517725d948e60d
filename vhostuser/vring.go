package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/ratelog"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

// vring is the control-side state of one queue, owned by the session's
// message loop. Only call is read by other goroutines.
type vring struct {
	index   int
	size    uint16
	addr    VringAddr
	addrSet bool
	base    uint16
	enabled bool
	kick    kickFile
	errFd   *os.File
	call    atomic.Pointer[callSink]
	run     *runner

	// Diagnostics, kept across ring restarts: the trace of notification
	// events, the number of call eventfds installed so far, when the last
	// signal was written (trace time) and a dump asked for on demand.
	trace      *trace
	callGen    atomic.Uint64
	lastSignal atomic.Int64
	dumpReq    atomic.Bool
}

// newVring returns the control state of queue index.
func newVring(index int) *vring { return &vring{index: index, trace: newTrace()} }

// callSink holds a queue's call eventfd: an *os.File through the runtime
// poller, or an *eventFD outside it (the ppoll kick-wait modes).
type callSink struct{ w io.WriteCloser }

// setCall installs a new call eventfd (nil for none) and closes the old
// one. A worker still holding the old one gets os.ErrClosed from its
// write, never a reused fd number. The new eventfd is signalled once: a
// completion pushed while the old one was installed (QEMU swaps call fds
// after enabling the rings) must not leave the guest waiting. A spurious
// interrupt costs the guest one look at its used ring.
func (v *vring) setCall(f io.WriteCloser) {
	var sink *callSink
	if f != nil {
		sink = &callSink{f}
	}
	old := v.call.Swap(sink)
	gen := v.callGen.Add(1)
	if f != nil {
		_, err := f.Write(eventOne[:])
		v.noteSignal(gen, err)
	}
	if old != nil {
		old.w.Close()
	}
}

// noteSignal records a write of call eventfd generation gen that ended
// with err (nil: written; os.ErrClosed: swapped and closed under us).
func (v *vring) noteSignal(gen uint64, err error) {
	res := sigWritten
	switch {
	case err == nil:
		v.lastSignal.Store(int64(time.Since(v.trace.start)))
	case errors.Is(err, os.ErrClosed):
		res = sigClosed
	default:
		res = sigFailed
	}
	v.trace.add(evSignal, uint16(gen), 0, 0, res)
}

// eventOne is the 8-byte little-endian 1 written to an eventfd.
var eventOne = [8]byte{1}

// slot is the per-descriptor-head state of a running queue: a head is in
// flight at most once, so its Chain's slices are reused request after
// request without allocating.
type slot struct {
	chain virtqueue.Chain
	snap  *virtqueue.Snapshot
	busy  atomic.Bool
	wait  time.Duration // from the kick that woke the leader to the pop (QueueWaiter only)
}

// QueueWaiter is a Device that also takes how long each chain waited in
// its queue between the kick that woke the leader and being popped (an
// upper bound for chains found without a kick). Only then is the time
// measured.
type QueueWaiter interface {
	QueueWait(queue int, d time.Duration)
}

// runner runs one started queue with a pool of goroutines in a
// leader/followers arrangement: the goroutine holding the lead token pops
// chains (waiting for kicks when the ring is empty); as soon as it has one,
// it passes the token to an idle follower and serves the chain itself. So
// a request is served by the goroutine the kick woke, with no hand-off on
// its path, and a slow request holds up only its own goroutine: the next
// chain is popped by the next leader. When every goroutine is busy, chains
// wait in the available ring until one finishes. Queue 0 (hiprio) and
// Options.Workers < 0 use one goroutine, which serves inline.
//
// Only the leader reads the kick eventfd, and a leader that found the ring
// empty re-arms kicks and looks once more before it blocks, so a kick can
// neither be consumed by a goroutine that will not look nor arrive between
// the last look and the wait. The wait is bounded (Options.IdleCheck): a
// leader that saw nothing for that long looks at both rings by itself.
type runner struct {
	v       *vring
	index   int
	q       *virtqueue.Queue
	mem     *virtqueue.GuestMemory
	dev     Device
	ctx     context.Context
	cancel  context.CancelFunc // cancels ctx: the stop gave up waiting
	log     *logrus.Entry
	kick    kickFile
	ppoll   *ppollWaiter    // Options.KickWait ppoll; nil: the runtime poller
	kickRaw syscall.RawConn // r.kick's, for ppoll
	procs   *ProcReserve    // Options.Procs, holding a P for this ppoll leader
	idle    time.Duration   // bound of one wait for a kick; <= 0: none
	poll    time.Duration   // how long to poll an empty ring before sleeping; <= 0: not at all
	slots   []slot
	stop    atomic.Bool
	lead    chan struct{} // holds the lead token when no goroutine leads
	quit    chan struct{} // closed when the queue stops
	quitted sync.Once
	popped  chan struct{} // closed once no goroutine will pop again
	poppedO sync.Once
	workers sync.WaitGroup
	warn    ratelog.Limiter // guest-triggered warnings
	qw      QueueWaiter     // dev, when it takes queue waits; else nil
	tr      *trace          // v.trace
	observe bool            // Options.IdleObserveOnly

	// Owned by the leader (the token orders successive leaders).
	scratch   virtqueue.Chain
	draining  bool // kicks are disabled while popping
	kickBuf   [8]byte
	kickAt    time.Time           // when the last kick woke the leader (QueueWaiter only)
	idleUsed  uint16              // used index at the last idle check
	deadline  time.Time           // of the kick reads, while waiting is bounded
	afterIdle bool                // the last wait ended by the idle bound
	idleTrace string              // the trace taken when the idle check found an unkicked chain
	observed  bool                // IdleObserveOnly: the last wait ended by the idle bound
	dumped    virtqueue.RingState // IdleObserveOnly: the state last dumped
}

func startRunner(ctx context.Context, v *vring, q *virtqueue.Queue, mem *virtqueue.GuestMemory, dev Device, opts Options, log *logrus.Entry) *runner {
	r := &runner{
		v: v, index: v.index, q: q, mem: mem, dev: dev, kick: v.kick, idle: opts.IdleCheck, poll: opts.PollBeforeSleep,
		log:    log.WithField("queue", v.index),
		slots:  make([]slot, q.Size()),
		lead:   make(chan struct{}, 1),
		quit:   make(chan struct{}),
		popped: make(chan struct{}),
	}
	if v.index == 0 {
		// hiprio carries FORGETs and INTERRUPTs, which nobody waits
		// for: polling it would only spin a second thread.
		r.poll = 0
	}
	r.qw, _ = dev.(QueueWaiter)
	r.tr, r.observe = v.trace, opts.IdleObserveOnly
	r.tr.add(evStart, v.base, q.State().DeviceUsed, 0, 0)
	switch opts.KickWait {
	case "", KickWaitPoller:
	case KickWaitPpoll, KickWaitInlinePpoll:
		raw, err := r.kick.SyscallConn()
		if err != nil {
			r.log.WithError(err).Warn("kick eventfd: no raw access; waiting for kicks through the runtime poller")
			break
		}
		r.kickRaw, r.ppoll = raw, newPpollWaiter(r.idle)
		r.procs = opts.Procs
		r.procs.add(1) // given back when the workers are done (stopAndWait)
		if opts.KickWait == KickWaitInlinePpoll {
			return r.startInline(ctx, opts)
		}
	case KickWaitInline:
		return r.startInline(ctx, opts)
	default:
		r.log.WithField("kick_wait", opts.KickWait).Warn("unknown kick wait mode; waiting for kicks through the runtime poller")
	}
	r.ctx, r.cancel = context.WithCancel(ctx)
	_ = r.kick.SetReadDeadline(time.Time{}) // a previous runner may have left one
	workers := opts.Workers
	if v.index == 0 || workers <= 0 {
		workers = 1
	}
	r.lead <- struct{}{}
	for i := 0; i < workers; i++ {
		r.workers.Add(1)
		go r.worker()
	}
	return r
}

// stopAndWait stops the queue and waits until every chain in flight is
// served and pushed, then unpins the ring. With wait false it only starts
// the stop. The wait is bounded by timeout: after half of it the requests'
// context is cancelled; after all of it the requests still in the device
// are abandoned: the ring is sealed (their completions are dropped, the
// frontend owns the ring again) and guest memory stays mapped until they
// let go of it. abort (the daemon shutting down) ends the wait at once.
//
// based reports that no goroutine pops any more, so LastAvail is final;
// complete that every chain popped was pushed.
func (r *runner) stopAndWait(wait bool, abort <-chan struct{}, timeout time.Duration) (based, complete bool) {
	r.stop.Store(true)
	r.tr.add(evStop, 0, 0, 0, 0)
	if r.ppoll != nil {
		// A spurious kick ends the leader's ppoll; the kick fd is closed
		// (by the caller, later) only once the leader has left it, since
		// the wait holds a reference on the os.File (KickWaitPpoll).
		_, _ = r.kick.Write(eventOne[:])
	} else {
		_ = r.kick.SetReadDeadline(time.Unix(1, 0))
	}
	finished := make(chan struct{})
	go func() {
		r.workers.Wait()
		r.procs.add(-1)
		r.cancel()
		r.q.Release()
		close(finished)
	}()
	if !wait {
		return false, false
	}
	t := time.NewTimer(timeout / 2)
	defer t.Stop()
	for phase := 0; ; phase++ {
		select {
		case <-finished:
			return true, true
		case <-abort:
			return false, false
		case <-t.C:
		}
		if phase > 0 {
			break
		}
		r.log.WithField("in_flight", r.inFlight()).Warn("stopping the queue: requests still in the device after half the stop timeout; cancelling them")
		r.cancel()
		t.Reset(timeout - timeout/2)
	}
	// Nobody may pop once we hold the lead token, or once the leader left.
	select {
	case <-r.popped:
	case <-r.lead:
		r.halt()
	case <-abort:
		return false, false
	}
	r.q.Seal()
	r.log.WithField("in_flight", r.inFlight()).Error("stopping the queue: requests stuck in the device past the stop timeout are abandoned; their replies will be dropped")
	return true, false
}

// inFlight counts the chains being served.
func (r *runner) inFlight() int {
	n := 0
	for i := range r.slots {
		if r.slots[i].busy.Load() {
			n++
		}
	}
	return n
}

func (r *runner) worker() {
	defer r.workers.Done()
	// A fault in guest memory (a frontend shrinking a memory file under
	// us) becomes a panic, which stops this queue (next) or fails one
	// request (handle), not the daemon.
	debug.SetPanicOnFault(true)
	for {
		select {
		case <-r.lead:
		case <-r.quit:
			return
		}
		head, ok := r.next()
		if !ok {
			r.poppedO.Do(func() { close(r.popped) })
			r.halt()
			return
		}
		r.lead <- struct{}{} // never blocks: there is one token
		if !r.serveOrStop(head) {
			return
		}
	}
}

// halt makes every goroutine of the queue return once it is idle.
func (r *runner) halt() { r.quitted.Do(func() { close(r.quit) }) }

// serveOrStop serves head; a fault outside the device (in the used ring)
// stops the queue instead of the daemon.
func (r *runner) serveOrStop(head uint16) (ok bool) {
	defer r.stopOnFault(&ok)
	r.serve(head)
	return true
}

// stopOnFault, deferred, turns a panic of the queue's own code (a fault in
// guest memory) into a logged stop of this queue: it sets *ok to false and
// makes every goroutine of the queue return.
func (r *runner) stopOnFault(ok *bool) {
	if p := recover(); p != nil {
		r.log.WithField("panic", fmt.Sprint(p)).WithField("stack", string(debug.Stack())).Error("queue stopped after a fault")
		r.halt()
		*ok = false
	}
}

// warnf logs a warning the guest can trigger at will, at most once a
// second per queue (shared with the other guest-triggered lines).
func (r *runner) warnf(fields logrus.Fields, format string, args ...any) {
	r.limited(logrus.WarnLevel, fields, format, args...)
}

// limited logs at level through the queue's limiter, with the number of
// lines held back since the last one.
func (r *runner) limited(level logrus.Level, fields logrus.Fields, format string, args ...any) {
	ok, n := r.warn.Allow()
	if !ok {
		return
	}
	l := r.log.WithFields(fields)
	if n > 0 {
		l = l.WithField("suppressed", n)
	}
	l.Logf(level, format, args...)
}

// next pops the next chain to serve into its slot, waiting for kicks while
// the ring is empty. Malformed chains are given back on the way. It
// returns false when the queue stops. Only the leader calls it.
func (r *runner) next() (head uint16, ok bool) {
	defer r.stopOnFault(&ok)
	for !r.stop.Load() {
		if !r.draining {
			r.q.DisableNotify()
			r.draining = true
		}
		snap := r.mem.Acquire()
		got, err := r.q.Pop(snap, &r.scratch)
		if got {
			head := r.scratch.Head
			r.tr.add(evPop, head, r.q.LastAvail(), 0, 0)
			if err != nil && isChainError(err) {
				snap.Release()
				r.dropMalformed(head, err)
				continue
			}
			s := &r.slots[head]
			if s.busy.Load() {
				snap.Release()
				r.warnf(logrus.Fields{"head": head}, "guest re-submitted a chain still in flight; ignoring it")
				continue
			}
			if r.afterIdle {
				r.afterIdle = false
				if r.idleTrace != "" { // a kick still unread is no loss
					r.limited(logrus.InfoLevel, logrus.Fields{"head": head, "trace": r.idleTrace}, "idle queue: found a chain published without a kick")
					r.idleTrace = ""
				}
			}
			s.busy.Store(true)
			if r.qw != nil {
				s.wait = 0
				if !r.kickAt.IsZero() {
					s.wait = time.Since(r.kickAt)
				}
			}
			s.chain, r.scratch = r.scratch, s.chain
			s.snap = snap
			return head, true
		}
		snap.Release()
		if err == nil && r.draining && r.pollRing() {
			continue
		}
		r.draining = false
		r.afterIdle = false
		// Kicks are re-armed before every wait, even when the ring is
		// broken (the guest may repair it), and the ring looked at once
		// more: what the guest published before it could see the re-arm
		// comes with no kick.
		pending, seen := r.q.EnableNotifyIdx()
		r.tr.add(evEnable, r.q.LastAvail(), seen, 0, b2u(pending))
		if pending && err == nil {
			continue
		}
		if err != nil {
			r.warnf(logrus.Fields{"error": err}, "queue is broken; waiting for the next kick")
		}
		if r.v.dumpReq.Swap(false) {
			r.log.WithField("trace", r.traceDump(traceLen)).Info("queue trace (asked for)")
		}
		if !r.waitKick() {
			break
		}
		// Options.IdleObserveOnly: an idle wake leads to another wait,
		// not to a look at the ring, as in a daemon without the check.
		for r.observed {
			r.observed = false
			if !r.waitKick() {
				return 0, false
			}
		}
	}
	return 0, false
}

// isChainError reports whether err is a *virtqueue.ChainError. Kept out of
// next, whose common path has no error, since the errors.As target
// escapes to the heap.
func isChainError(err error) bool {
	var ce *virtqueue.ChainError
	return errors.As(err, &ce)
}

// dropMalformed gives back a malformed chain popped with err, a
// *virtqueue.ChainError, when the guest may have it back.
func (r *runner) dropMalformed(head uint16, err error) {
	var ce *virtqueue.ChainError
	errors.As(err, &ce)
	r.warnf(logrus.Fields{"error": err}, "dropping malformed descriptor chain")
	if ce.Returnable && !r.slots[head].busy.Load() {
		r.push(head, 0)
	}
}

// pollRing looks at the empty ring for up to r.poll, kicks still
// suppressed, and reports whether a chain arrived (or the queue is
// stopping: the caller's loop then ends).
//
// Between looks it gives its core to any other thread that wants it
// (sched_yield(2), a system call that never blocks, so made raw): on a
// host with few cores the polling thread must not delay the VMM's vCPU
// and I/O threads, which every request needs too. A poll that spun
// without yielding held the core QEMU's threads wanted, which cost the
// streaming workloads 20-30 % in the guest (docs/benchmarks.md, issue
// 15). It never yields to the Go scheduler: a goroutine that keeps
// calling runtime.Gosched keeps its P's run queue busy, so the netpoller
// (the vhost-user socket, other queues' kicks in the poller modes) is not
// looked at until it stops; measured in BenchmarkTransportEcho, that made
// one-at-a-time requests 4x slower.
func (r *runner) pollRing() bool {
	if r.poll <= 0 {
		return false
	}
	var end time.Time
	for i := 0; ; i++ {
		if r.q.Pending() || r.stop.Load() {
			return true
		}
		if i%8 == 0 {
			now := time.Now()
			if i == 0 {
				end = now.Add(r.poll)
			} else if now.After(end) {
				return false
			}
		}
		unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
	}
}

// waitKick waits for a kick, at most r.idle; after an idle period it looks
// for a signal the guest may have missed. It returns false when the queue
// stops.
func (r *runner) waitKick() bool {
	if r.ppoll != nil {
		return r.waitKickPpoll()
	}
	if r.idle > 0 {
		// Re-arming the deadline costs a runtime timer update (about
		// 100-1000 ns, more than the rest of the wait's bookkeeping), so
		// one deadline serves every wait in the next half period: a wait
		// then lasts between IdleCheck/2 and IdleCheck before the check.
		if now := time.Now(); now.After(r.deadline.Add(-r.idle / 2)) {
			r.deadline = now.Add(r.idle)
			_ = r.kick.SetReadDeadline(r.deadline)
		}
	}
	// Checked after setting the deadline: a stop that comes later sets
	// its own, past one, after ours.
	if r.stop.Load() {
		return false
	}
	_, err := r.kick.Read(r.kickBuf[:])
	if r.stop.Load() {
		return false
	}
	switch {
	case err == nil:
		r.kicked()
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
	case errors.Is(err, os.ErrDeadlineExceeded):
		r.idleCheck()
	default:
		r.log.WithError(err).Error("kick eventfd read failed; queue stops")
		return false
	}
	return true
}

// waitKickPpoll is waitKick for KickWaitPpoll: the leader blocks in
// ppoll(2) on the kick eventfd, the idle bound as its timeout. The wait
// runs inside RawConn.Control, so the fd stays open (a Close waits) until
// the wait returns; a stop's spurious kick makes that prompt.
func (r *runner) waitKickPpoll() bool {
	if r.stop.Load() {
		return false
	}
	w := r.ppoll
	cerr := r.kickRaw.Control(w.wait)
	if r.stop.Load() {
		return false
	}
	switch {
	case cerr != nil, w.err != nil:
		r.log.WithError(errors.Join(cerr, w.err)).Error("waiting for a kick failed; queue stops")
		return false
	case w.timedOut:
		r.idleCheck()
	default:
		r.kicked()
	}
	return true
}

// kicked notes when a kick woke the leader (QueueWaiter only).
func (r *runner) kicked() {
	r.tr.add(evKick, 0, 0, 0, 0)
	if r.qw != nil {
		r.kickAt = time.Now()
	}
}

// idleCheck runs after a quiet period: if the guest may be waiting for a
// used-buffer signal it did not get, it is signalled (once per change of
// the used index without EVENT_IDX, where the guest's progress cannot be
// seen). Anything published without a kick is popped by the caller's next
// look at the ring. Either case is logged with the queue's trace.
func (r *runner) idleCheck() {
	r.tr.add(evIdleWake, 0, 0, 0, 0)
	st := r.q.State()
	unkicked := st.AvailIdx != st.LastAvail
	used, waiting := r.q.UsedIdle()
	unreaped := waiting && r.q.EventIdx()
	if r.v.dumpReq.Swap(false) {
		r.log.WithField("trace", r.traceDump(traceLen)).Info("queue trace (asked for)")
	}
	var verdicts []string
	if unkicked {
		verdicts = append(verdicts, r.tr.unkickedVerdict(st, r.kickPending()))
	}
	if unreaped {
		verdicts = append(verdicts, r.tr.unreapedVerdict(st))
	}
	if r.observe {
		r.observed = true
		if (unkicked || unreaped) && st != r.dumped {
			r.dumped = st
			r.log.WithFields(logrus.Fields{"unkicked": unkicked, "unreaped": unreaped, "verdict": strings.Join(verdicts, "; "), "trace": r.traceDump(traceLen)}).Warn("idle queue looks stuck; not recovering (IdleObserveOnly)")
		}
		r.tr.add(evIdle, used, st.UsedEvent, 0, 0)
		return
	}
	if unkicked {
		if verdicts[0] == verdictKickLate {
			r.idleTrace = ""
		} else {
			r.idleTrace = verdicts[0] + "\n" + r.traceDump(64)
		}
	}
	signalled := waiting && (r.q.EventIdx() || used != r.idleUsed)
	if signalled {
		if unreaped {
			// Linux re-arms with used_event = its last used index once it
			// has reaped everything: a different value after a quiet
			// period means a signal it never acted on (or, rarely, that
			// it is reaping right now).
			r.limited(logrus.InfoLevel, logrus.Fields{"used": used, "verdict": verdicts[len(verdicts)-1], "trace": r.traceDump(64)}, "idle queue: the guest has not reaped every used entry; signalling it again")
		}
		r.signal()
	}
	r.tr.add(evIdle, used, st.UsedEvent, 0, b2u(signalled))
	r.idleUsed = used
	r.afterIdle = true
}

// kickPending reports whether the kick eventfd is readable now, without
// reading it (a kick that came as the idle bound expired is read by the
// next wait).
func (r *runner) kickPending() bool {
	raw, err := r.kick.SyscallConn()
	if err != nil {
		return false
	}
	ready := false
	_ = raw.Control(func(fd uintptr) {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(p, 0)
		ready = err == nil && n > 0 && p[0].Revents&unix.POLLIN != 0
	})
	return ready
}

// traceDump formats the queue's last events and its ring state now. Only
// the leader calls it (the state includes the leader's LastAvail).
func (r *runner) traceDump(last int) string {
	since := time.Duration(int64(time.Since(r.tr.start)) - r.v.lastSignal.Load())
	return r.tr.dump(last) + "state: " + ringStateString(r.q.State(), r.inFlight(), r.v.callGen.Load(), since)
}

// serve hands one chain to the device and completes it.
func (r *runner) serve(head uint16) {
	s := &r.slots[head]
	n := r.handle(s)
	if max := s.chain.WritableLen(); int64(n) > int64(max) {
		r.log.WithFields(logrus.Fields{"head": head, "written": n, "room": max}).Error("device reported more bytes than the chain holds")
		n = uint32(max)
	}
	s.snap.Release()
	s.snap = nil
	s.busy.Store(false)
	r.push(head, n)
}

func (r *runner) handle(s *slot) (n uint32) {
	defer func() {
		if p := recover(); p != nil {
			// A request can make the device panic at will: limited too.
			r.limited(logrus.ErrorLevel, logrus.Fields{"panic": fmt.Sprint(p), "stack": string(debug.Stack())}, "device panicked serving a chain; answered with 0 bytes")
			n = 0
		}
	}()
	if r.qw != nil {
		r.qw.QueueWait(r.index, s.wait)
	}
	return r.dev.HandleChain(r.ctx, r.index, &s.chain)
}

func (r *runner) push(head uint16, n uint32) {
	notify, used, wish := r.q.PushEvent(head, n)
	r.tr.add(evPush, head, used, wish, b2u(notify))
	if notify {
		r.signal()
	}
}

// signal writes the call eventfd. Without one (none installed yet) the
// signal is dropped: the frontend signals the next call eventfd it
// installs (setCall), and the idle check covers the rest.
func (r *runner) signal() {
	gen := r.v.callGen.Load()
	f := r.v.call.Load()
	if f == nil {
		r.tr.add(evSignal, uint16(gen), 0, 0, sigNoCall)
		return
	}
	_, err := f.w.Write(eventOne[:])
	r.v.noteSignal(gen, err)
	if err != nil && !errors.Is(err, os.ErrClosed) {
		r.warnf(logrus.Fields{"error": err}, "signalling the call eventfd failed")
	}
}
