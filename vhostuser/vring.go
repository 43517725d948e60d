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

// runner runs one started queue: a kick loop that pops chains, and for
// request queues a bounded pool of workers that serve them.
type runner struct {
	v       *vring
	index   int
	q       *virtqueue.Queue
	mem     *virtqueue.GuestMemory
	dev     Device
	ctx     context.Context
	log     *logrus.Entry
	kick    *os.File
	inline  bool
	work    chan uint16
	slots   []slot
	scratch virtqueue.Chain
	stop    atomic.Bool
	done    chan struct{} // closed when the kick loop has returned
	workers sync.WaitGroup
	kickBuf [8]byte
}

func startRunner(ctx context.Context, v *vring, q *virtqueue.Queue, mem *virtqueue.GuestMemory, dev Device, workers int, log *logrus.Entry) *runner {
	r := &runner{
		v: v, index: v.index, q: q, mem: mem, dev: dev, ctx: ctx, kick: v.kick,
		log:   log.WithField("queue", v.index),
		slots: make([]slot, q.Size()),
		done:  make(chan struct{}),
	}
	_ = r.kick.SetReadDeadline(time.Time{}) // a previous runner may have left one
	r.inline = v.index == 0 || workers <= 0
	if !r.inline {
		r.work = make(chan uint16, q.Size())
		for i := 0; i < workers; i++ {
			r.workers.Add(1)
			go r.worker()
		}
	}
	go r.kickLoop()
	return r
}

// stopAndWait stops the kick loop, waits until every chain in flight is
// served and pushed, then unpins the ring. It reports whether it saw all
// that happen: with wait false, or when the session's context ends first
// (shutdown must not hang on a request stuck in the device), the rest
// happens in the background (abort is the daemon shutting down), and guest memory stays mapped until the
// request lets go of it.
func (r *runner) stopAndWait(wait bool, abort <-chan struct{}) bool {
	r.stop.Store(true)
	_ = r.kick.SetReadDeadline(time.Unix(1, 0))
	finished := make(chan struct{})
	go func() {
		<-r.done
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

func (r *runner) kickLoop() {
	defer close(r.done)
	if r.work != nil {
		defer close(r.work)
	}
	// A fault in guest memory (a frontend shrinking a memory file under
	// us) becomes a panic here, which stops this queue, not the daemon.
	debug.SetPanicOnFault(true)
	defer func() {
		if p := recover(); p != nil {
			r.log.WithField("panic", fmt.Sprint(p)).WithField("stack", string(debug.Stack())).Error("queue stopped after a fault")
		}
	}()
	for {
		r.drain()
		_, err := r.kick.Read(r.kickBuf[:])
		if r.stop.Load() {
			return
		}
		if err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
			r.log.WithError(err).Error("kick eventfd read failed; queue stops")
			return
		}
	}
}

// drain pops and dispatches every available chain, then re-enables kicks
// and looks once more (the guest may have added chains in between).
func (r *runner) drain() {
	for !r.stop.Load() {
		r.q.DisableNotify()
		for !r.stop.Load() {
			snap := r.mem.Acquire()
			ok, err := r.q.Pop(snap, &r.scratch)
			if !ok {
				snap.Release()
				if err != nil {
					r.log.WithError(err).Error("queue is broken; waiting for the next kick")
					return
				}
				break
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
			if r.inline {
				r.serve(head)
			} else {
				r.work <- head
			}
		}
		if !r.q.EnableNotify() {
			return
		}
	}
}

func (r *runner) worker() {
	defer r.workers.Done()
	debug.SetPanicOnFault(true) // see kickLoop; handle recovers
	for head := range r.work {
		r.serve(head)
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
		if f := r.v.call.Load(); f != nil {
			if _, err := f.Write(eventOne[:]); err != nil && !errors.Is(err, os.ErrClosed) {
				r.log.WithError(err).Warn("signalling the call eventfd failed")
			}
		}
	}
}
