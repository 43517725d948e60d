package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

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
	kick    *os.File
	errFd   *os.File
	call    atomic.Pointer[os.File]
	run     *runner
}

// setCall installs a new call eventfd (nil for none) and closes the old
// one. A worker still holding the old *os.File gets os.ErrClosed from its
// write, never a reused fd number. The new eventfd is signalled once: a
// completion pushed while the old one was installed (QEMU swaps call fds
// after enabling the rings) must not leave the guest waiting. A spurious
// interrupt costs the guest one look at its used ring.
func (v *vring) setCall(f *os.File) {
	old := v.call.Swap(f)
	if f != nil {
		_, _ = f.Write(eventOne[:])
	}
	if old != nil {
		old.Close()
	}
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
type runner struct {
	v       *vring
	index   int
	q       *virtqueue.Queue
	mem     *virtqueue.GuestMemory
	dev     Device
	ctx     context.Context
	log     *logrus.Entry
	kick    *os.File
	slots   []slot
	stop    atomic.Bool
	lead    chan struct{} // holds the lead token when no goroutine leads
	quit    chan struct{} // closed when the queue stops
	quitted sync.Once
	workers sync.WaitGroup

	// Owned by the leader (the token orders successive leaders).
	scratch  virtqueue.Chain
	draining bool // kicks are disabled while popping
	kickBuf  [8]byte
}

func startRunner(ctx context.Context, v *vring, q *virtqueue.Queue, mem *virtqueue.GuestMemory, dev Device, workers int, log *logrus.Entry) *runner {
	r := &runner{
		v: v, index: v.index, q: q, mem: mem, dev: dev, ctx: ctx, kick: v.kick,
		log:   log.WithField("queue", v.index),
		slots: make([]slot, q.Size()),
		lead:  make(chan struct{}, 1),
		quit:  make(chan struct{}),
	}
	_ = r.kick.SetReadDeadline(time.Time{}) // a previous runner may have left one
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

// stopAndWait stops the queue, waits until every chain in flight is
// served and pushed, then unpins the ring. It reports whether it saw all
// that happen: with wait false, or when abort (the daemon shutting down)
// is closed first (shutdown must not hang on a request stuck in the
// device), the rest happens in the background, and guest memory stays
// mapped until the request lets go of it.
func (r *runner) stopAndWait(wait bool, abort <-chan struct{}) bool {
	r.stop.Store(true)
	_ = r.kick.SetReadDeadline(time.Unix(1, 0))
	finished := make(chan struct{})
	go func() {
		r.workers.Wait()
		r.q.Release()
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

// next pops the next chain to serve into its slot, waiting for kicks while
// the ring is empty. Malformed chains are given back on the way. It
// returns false when the queue stops. Only the leader calls it.
func (r *runner) next() (head uint16, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			r.log.WithField("panic", fmt.Sprint(p)).WithField("stack", string(debug.Stack())).Error("queue stopped after a fault")
			ok = false
		}
	}()
	for !r.stop.Load() {
		if !r.draining {
			r.q.DisableNotify()
			r.draining = true
		}
		snap := r.mem.Acquire()
		got, err := r.q.Pop(snap, &r.scratch)
		if got {
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
			return head, true
		}
		snap.Release()
		r.draining = false
		if err != nil {
			r.log.WithError(err).Error("queue is broken; waiting for the next kick")
		} else if r.q.EnableNotify() {
			continue // chains arrived meanwhile; no kick will come for them
		}
		_, err = r.kick.Read(r.kickBuf[:])
		if r.stop.Load() {
			break
		}
		if err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			r.log.WithError(err).Error("kick eventfd read failed; queue stops")
			break
		}
	}
	return 0, false
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
		if f := r.v.call.Load(); f != nil {
			if _, err := f.Write(eventOne[:]); err != nil && !errors.Is(err, os.ErrClosed) {
				r.log.WithError(err).Warn("signalling the call eventfd failed")
			}
		}
	}
}
