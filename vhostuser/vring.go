package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

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
	kick    *eventFD
	errFd   *eventFD
	call    atomic.Pointer[eventFD]
	run     *runner
}

// setCall installs a new call eventfd (nil for none) and closes the old
// one. A worker still holding the old one gets os.ErrClosed from its
// signal, never a reused fd number. The new eventfd is signalled once: a
// completion pushed while the old one was installed (QEMU swaps call fds
// after enabling the rings) must not leave the guest waiting. A spurious
// interrupt costs the guest one look at its used ring.
func (v *vring) setCall(e *eventFD) {
	old := v.call.Swap(e)
	if e != nil {
		_ = e.signal()
	}
	if old != nil {
		old.Close()
	}
}

// eventOne is the 8-byte little-endian 1 written to an eventfd.
var eventOne = [8]byte{1}

// eventFD is a kick or call eventfd from the frontend, used with plain
// read(2), write(2) and poll(2) and never registered with the Go runtime's
// poller: an *os.File over a non-blocking eventfd is, and then every
// signal and every read by the other side wakes the thread sleeping in
// the poller for nothing (the fd is shared with the frontend, so its mode
// stays as the frontend set it). signal and Close may race: close waits
// for signals in progress, and a later signal gets os.ErrClosed.
type eventFD struct {
	mu sync.RWMutex // held for reading while fd is used, for writing to close it
	fd int          // -1 once closed
}

func newEventFD(fd int) *eventFD { return &eventFD{fd: fd} }

// signal adds 1 to the eventfd. A full counter (EAGAIN) already means
// "signalled".
func (e *eventFD) signal() error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.fd < 0 {
		return os.ErrClosed
	}
	for {
		_, err := unix.Write(e.fd, eventOne[:])
		switch err {
		case unix.EINTR:
			continue
		case nil, unix.EAGAIN:
			return nil
		}
		return fmt.Errorf("eventfd write: %w", err)
	}
}

// dup returns a new close-on-exec descriptor for the same eventfd.
func (e *eventFD) dup() (int, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.fd < 0 {
		return -1, os.ErrClosed
	}
	return unix.FcntlInt(uintptr(e.fd), unix.F_DUPFD_CLOEXEC, 0)
}

// Close closes the descriptor; later calls do nothing.
func (e *eventFD) Close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fd >= 0 {
		unix.Close(e.fd)
		e.fd = -1
	}
}

// slot is the per-descriptor-head state of a running queue: a head is in
// flight at most once, so its Chain's slices are reused request after
// request without allocating.
type slot struct {
	chain virtqueue.Chain
	snap  *virtqueue.Snapshot
	busy  atomic.Bool
}

// runner runs one started queue with a pool of goroutines, each on its own
// OS thread while it waits: an idle goroutine sleeps in epoll_wait(2) on
// an epoll instance of the queue holding the kick eventfd, edge-triggered,
// so the kernel wakes exactly one sleeper per kick (waiters of one epoll
// instance are exclusive). The thread woken pops the chain and serves it
// itself: no Go runtime poller, no hand-off to another goroutine, no
// second thread woken per request. Popping is serialised by a mutex; the
// goroutine that pops a chain re-arms the guest's kick (EVENT_IDX
// avail_event, or the NO_NOTIFY flag) before serving it, so the next chain
// kicks and wakes another sleeper: a slow request holds up only its own
// goroutine. A chain the guest published before the re-arm sent no kick;
// the popper then kicks the eventfd itself, waking another goroutine for
// it. A goroutine that finishes a chain looks at the ring before sleeping
// again. When every goroutine is busy, chains wait in the available ring
// until one finishes. Queue 0 (hiprio) and Options.Workers < 0 use one
// goroutine.
type runner struct {
	v       *vring
	index   int
	q       *virtqueue.Queue
	mem     *virtqueue.GuestMemory
	dev     Device
	ctx     context.Context
	log     *logrus.Entry
	slots   []slot
	stop    atomic.Bool
	workers sync.WaitGroup

	// kickFd is the runner's own descriptor of the kick eventfd, stopFd
	// an eventfd signalled (and left signalled) to stop, epFd the epoll
	// instance watching both. All are closed once every goroutine of the
	// queue has returned, so no wait can reach a reused fd number.
	kickFd, stopFd, epFd int

	popMu   sync.Mutex // serialises Pop and the notify state
	scratch virtqueue.Chain
}

// epoll user data of the runner's two descriptors.
const (
	epKick = 1
	epStop = 2
)

// startRunner starts serving q. On error nothing is left running and q is
// still the caller's.
func startRunner(ctx context.Context, v *vring, q *virtqueue.Queue, mem *virtqueue.GuestMemory, dev Device, workers int, log *logrus.Entry) (*runner, error) {
	r := &runner{
		v: v, index: v.index, q: q, mem: mem, dev: dev, ctx: ctx,
		log:    log.WithField("queue", v.index),
		slots:  make([]slot, q.Size()),
		kickFd: -1, stopFd: -1, epFd: -1,
	}
	if err := r.openFds(); err != nil {
		r.closeFds()
		return nil, err
	}
	if v.index == 0 || workers <= 0 {
		workers = 1
	}
	for i := 0; i < workers; i++ {
		r.workers.Add(1)
		go r.worker()
	}
	return r, nil
}

func (r *runner) openFds() (err error) {
	if r.kickFd, err = r.v.kick.dup(); err != nil {
		return fmt.Errorf("kick eventfd: %w", err)
	}
	if r.stopFd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fmt.Errorf("stop eventfd: %w", err)
	}
	if r.epFd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	kick := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: epKick}
	if err := unix.EpollCtl(r.epFd, unix.EPOLL_CTL_ADD, r.kickFd, &kick); err != nil {
		return fmt.Errorf("epoll add kick eventfd: %w", err)
	}
	// Level-triggered: once stopping, every sleeper wakes and sees it.
	stop := unix.EpollEvent{Events: unix.EPOLLIN, Fd: epStop}
	if err := unix.EpollCtl(r.epFd, unix.EPOLL_CTL_ADD, r.stopFd, &stop); err != nil {
		return fmt.Errorf("epoll add stop eventfd: %w", err)
	}
	return nil
}

func (r *runner) closeFds() {
	for _, fd := range []int{r.epFd, r.stopFd, r.kickFd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// stopAndWait stops the queue, waits until every chain in flight is
// served and pushed, then unpins the ring. It reports whether it saw all
// that happen: with wait false, or when abort (the daemon shutting down)
// is closed first (shutdown must not hang on a request stuck in the
// device), the rest happens in the background, and guest memory stays
// mapped until the request lets go of it.
func (r *runner) stopAndWait(wait bool, abort <-chan struct{}) bool {
	r.halt()
	finished := make(chan struct{})
	go func() {
		r.workers.Wait()
		r.q.Release()
		r.closeFds()
		close(finished)
	}()
	if !wait {
		return false
	}
	select {
	case <-finished:
		return true
	case <-abort:
		return false
	}
}

// halt makes every goroutine of the queue return once it is idle.
func (r *runner) halt() {
	if r.stop.Swap(true) {
		return
	}
	if _, err := unix.Write(r.stopFd, eventOne[:]); err != nil {
		r.log.WithError(err).Error("signalling the stop eventfd failed")
	}
}

func (r *runner) worker() {
	defer r.workers.Done()
	// A fault in guest memory (a frontend shrinking a memory file under
	// us) becomes a panic, which stops this queue (next) or fails one
	// request (handle), not the daemon.
	debug.SetPanicOnFault(true)
	var events [2]unix.EpollEvent
	var count [8]byte // kick counts, not looked at
	for !r.stop.Load() {
		head, got, ok := r.next()
		if !ok {
			r.halt()
			return
		}
		if got {
			if !r.serveOrStop(head) {
				return
			}
			continue
		}
		if err := r.wait(events[:], count[:]); err != nil {
			r.log.WithError(err).Error("waiting for a kick failed; queue stops")
			r.halt()
			return
		}
	}
}

// wait sleeps until a kick (consuming it) or a stop.
func (r *runner) wait(events []unix.EpollEvent, count []byte) error {
	for {
		n, err := unix.EpollWait(r.epFd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:n] {
			if ev.Fd == epKick {
				// Non-blocking (the session made it so): EAGAIN means
				// another goroutine took the count.
				if _, err := unix.Read(r.kickFd, count); err != nil && err != unix.EAGAIN && err != unix.EINTR {
					return fmt.Errorf("kick eventfd read: %w", err)
				}
			}
		}
		return nil
	}
}

// serveOrStop serves head; a fault outside the device (in the used ring)
// stops the queue instead of the daemon.
func (r *runner) serveOrStop(head uint16) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			r.log.WithField("panic", fmt.Sprint(p)).WithField("stack", string(debug.Stack())).Error("queue stopped after a fault")
			r.halt()
			ok = false
		}
	}()
	r.serve(head)
	return true
}

// next pops the next chain to serve into its slot, giving malformed
// chains back on the way. got is false when the ring is empty (the guest
// will kick for the next chain); ok is false after a fault in the ring.
// Before returning a chain it re-arms the kick, and if more chains are
// waiting (published while the kick was not armed) kicks the eventfd so
// that another goroutine takes them.
func (r *runner) next() (head uint16, got, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			r.log.WithField("panic", fmt.Sprint(p)).WithField("stack", string(debug.Stack())).Error("queue stopped after a fault")
			r.popMu.Unlock()
			got, ok = false, false
		}
	}()
	r.popMu.Lock()
	for {
		snap := r.mem.Acquire()
		popped, err := r.q.Pop(snap, &r.scratch)
		if !popped {
			snap.Release()
			if err != nil {
				r.log.WithError(err).Error("queue is broken; waiting for the next kick")
				r.q.EnableNotify()
				r.popMu.Unlock()
				return 0, false, true
			}
			if r.q.EnableNotify() {
				continue // published meanwhile; no kick will come for it
			}
			r.popMu.Unlock()
			return 0, false, true
		}
		head := r.scratch.Head
		var ce *virtqueue.ChainError
		if errors.As(err, &ce) {
			snap.Release()
			r.log.WithError(err).Warn("dropping malformed descriptor chain")
			if ce.Returnable && !r.slots[head].busy.Load() {
				r.push(head, 0)
			}
			continue
		}
		s := &r.slots[head]
		if s.busy.Load() {
			snap.Release()
			r.log.WithField("head", head).Warn("guest re-submitted a chain still in flight; ignoring it")
			continue
		}
		s.busy.Store(true)
		s.chain, r.scratch = r.scratch, s.chain
		s.snap = snap
		if r.q.EnableNotify() {
			// More chains are waiting and sent no kick: wake another
			// goroutine for them (or this one, once it is done).
			if _, err := unix.Write(r.kickFd, eventOne[:]); err != nil && err != unix.EAGAIN {
				r.log.WithError(err).Warn("self-kick failed")
			}
		}
		r.popMu.Unlock()
		return head, true, true
	}
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
			r.log.WithField("panic", fmt.Sprint(p)).WithField("stack", string(debug.Stack())).Error("device panicked serving a chain; answered with 0 bytes")
			n = 0
		}
	}()
	return r.dev.HandleChain(r.ctx, r.index, &s.chain)
}

func (r *runner) push(head uint16, n uint32) {
	if r.q.Push(head, n) {
		if e := r.v.call.Load(); e != nil {
			if err := e.signal(); err != nil && !errors.Is(err, os.ErrClosed) {
				r.log.WithError(err).Warn("signalling the call eventfd failed")
			}
		}
	}
}
