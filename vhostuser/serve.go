package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

// Device is what the transport serves: a virtio device that turns one
// descriptor chain into a reply.
type Device interface {
	// NumQueues is the total number of queues, hiprio queue 0 included.
	NumQueues() int
	// Features are device-specific virtio feature bits offered on top of
	// the transport ones (0 for virtio-fs).
	Features() uint64
	// HandleChain serves one chain and returns the number of bytes written
	// into c.Writable. It may run concurrently for different chains of the
	// same queue. The chain's buffers are valid only until it returns.
	HandleChain(ctx context.Context, queue int, c *virtqueue.Chain) uint32
}

// SessionObserver is optionally implemented by a Device that wants to know
// when a frontend session starts and ends (for example to forget FUSE
// state, since a reconnecting guest sends FUSE_INIT again). EndSession runs
// after every queue has stopped, unless shutdown is abandoning requests
// stuck in the device.
type SessionObserver interface {
	StartSession()
	EndSession()
}

// Options tune Serve. The zero value is usable.
type Options struct {
	// RequestQueues is the number of request queues N (queues 1..N);
	// GET_QUEUE_NUM reports 1+N. 0 means dev.NumQueues()-1, or 1 when the
	// device reports fewer than two queues.
	RequestQueues int
	// Workers is the number of goroutines serving each request queue.
	// 0 means DefaultWorkers; negative means one goroutine that serves
	// each request inline (a slow request then holds up its queue).
	Workers int
	// KeepListening makes Serve accept the next frontend after one
	// disconnects instead of returning (virtiofsd returns).
	KeepListening bool
	// Logger receives the logs; nil means logrus's standard logger.
	Logger logrus.FieldLogger
	// OnWaiting, if set, is called instead of logging WaitingLine each
	// time Serve starts waiting for a frontend (a daemon that has to put
	// the line on stderr verbatim, whatever its log destination).
	OnWaiting func()
	// StopTimeout bounds how long stopping a queue (GET_VRING_BASE,
	// SET_VRING_ENABLE(0), a new kick fd, RESET_OWNER, the frontend
	// leaving) waits for requests still in the device: after half of it
	// their context is cancelled, after all of it they are abandoned (their
	// completions no longer touch the ring) and the stop goes on, so a
	// stuck request cannot hang the frontend. 0 means DefaultStopTimeout.
	StopTimeout time.Duration
	// IdleCheck bounds how long a queue's leader waits for a kick before
	// it looks at the rings by itself (between IdleCheck/2 and IdleCheck:
	// one deadline serves the waits of half a period): anything the guest
	// published without a kick is served, and a guest that may have missed
	// its used-buffer signal is signalled again (see
	// docs/notifications.md). 0 means DefaultIdleCheck; negative turns the
	// check off.
	IdleCheck time.Duration
	// IdleObserveOnly is for diagnosing lost notifications: a leader still
	// wakes after IdleCheck, and logs the queue's trace and ring state
	// when the queue looks stuck (a chain published without a kick, or
	// used entries the guest has not reaped), but does not recover: it
	// waits for the next kick as if it had not woken. Never in production.
	IdleObserveOnly bool
	// DumpSignal, if set, makes every queue log its trace of recent
	// notification events and its ring state when the process receives
	// it (at the queue's next wake, within IdleCheck).
	DumpSignal os.Signal
	// PollBeforeSleep is how long a queue's leader that found its ring
	// empty keeps looking at it, with kicks still suppressed, before it
	// re-arms kicks and sleeps: a request published within that window is
	// popped without a kick (no guest exit, no eventfd, no wake-up of a
	// sleeping thread), at the price of a CPU spinning (and yielding it
	// to any other thread at every look) for that long after every burst.
	// 0 (the default here; the daemon's is 200 µs) or negative: no
	// polling. The hiprio queue never polls. Measured in
	// docs/benchmarks.md (issue 15): with KickWaitInlinePpoll it made a
	// guest's synchronous loops (stat, open+read) 1.3-1.6x faster
	// without costing the streaming ones.
	PollBeforeSleep time.Duration
	// KickWait is how a queue's leader sleeps until the next kick:
	// KickWaitPoller ("" or "poller", the default: the Go runtime's
	// poller) or KickWaitPpoll ("ppoll": blocking in ppoll(2) on the kick
	// eventfd); KickWaitInline and KickWaitInlinePpoll also make the
	// leader serve what it pops and keep the lead (inline.go). See
	// kickwait.go and docs/benchmarks.md (issue 15).
	KickWait KickWait
	// Procs, if set, raises GOMAXPROCS by one for each queue leader that
	// sleeps in ppoll(2) while its queue runs (see ProcReserve). The
	// daemon sets it; nil leaves GOMAXPROCS alone.
	Procs *ProcReserve
}

// The request path's settings nydus-virtiofsd runs with unless told
// otherwise (its --kick-wait and --poll-before-sleep; figures in
// docs/benchmarks.md, issue 15): a queue's leader blocks in ppoll(2) on its
// kick eventfd (kept out of the Go runtime's poller) and serves what it pops
// itself, as the C virtiofsd's queue thread does; before it sleeps it looks
// at its empty ring for 200 µs, yielding its core at every look, which
// catches the next request of a guest's synchronous loop (stat,
// open+read+close: 170-200 µs apart under TCG) without an exit, an eventfd
// or a wake-up. KVM's halt polling waits as long (halt_poll_ns) for the same
// reason. The zero Options keep the runtime poller and no polling instead,
// which suits a process that cannot spare a core spinning after each burst;
// a benchmark of "the daemon" must use these (e2e does).
const (
	RecommendedKickWait        = KickWaitInlinePpoll
	RecommendedPollBeforeSleep = 200 * time.Microsecond
)

// DefaultWorkers is the per-request-queue worker count when Options.Workers is 0.
const DefaultWorkers = 4

// DefaultStopTimeout is Options.StopTimeout's default.
const DefaultStopTimeout = 4 * time.Second

// DefaultIdleCheck is Options.IdleCheck's default.
const DefaultIdleCheck = time.Second

// WaitingLine announces that Serve waits for a frontend to connect. Kata's
// runtime-rs waits for this exact text on the daemon's stderr before it
// starts the VMM.
const WaitingLine = "Waiting for vhost-user socket connection..."

// MaxMemSlots is what GET_MAX_MEM_SLOTS reports.
const MaxMemSlots = 509

func (o Options) withDefaults(dev Device) Options {
	if o.RequestQueues <= 0 {
		o.RequestQueues = dev.NumQueues() - 1
		if o.RequestQueues < 1 {
			o.RequestQueues = 1
		}
	}
	if o.RequestQueues > 255 {
		o.RequestQueues = 255 // queue indexes travel in 8 bits (SET_VRING_KICK)
	}
	if o.Workers == 0 {
		o.Workers = DefaultWorkers
	}
	if o.Logger == nil {
		o.Logger = logrus.StandardLogger()
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.IdleCheck == 0 {
		o.IdleCheck = DefaultIdleCheck
	}
	return o
}

// Serve accepts frontends on l and serves dev to them, one at a time. It
// returns when the frontend disconnects (nil after a clean disconnect, or
// the session's error), or, with KeepListening, only when ctx is cancelled
// or accepting fails. Cancelling ctx closes the listener and any connected
// session promptly; Serve then returns nil. Serve closes l.
func Serve(ctx context.Context, l *net.UnixListener, dev Device, opts Options) error {
	opts = opts.withDefaults(dev)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopAccept := context.AfterFunc(ctx, func() { l.Close() })
	defer stopAccept()
	defer l.Close()
	for {
		if opts.OnWaiting != nil {
			opts.OnWaiting()
		} else {
			opts.Logger.Info(WaitingLine)
		}
		c, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		opts.Logger.Info("Client connected, servicing requests")
		err = serveConn(ctx, c, dev, opts)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			opts.Logger.WithError(err).Error("vhost-user session failed")
		} else {
			opts.Logger.Info("Client disconnected")
		}
		if !opts.KeepListening {
			return err
		}
	}
}

func serveConn(ctx context.Context, c *net.UnixConn, dev Device, opts Options) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn := NewConn(c)
	conn.KeepFdReserve()
	stop := context.AfterFunc(sctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	s := newSession(sctx, ctx, conn, dev, opts)
	if opts.DumpSignal != nil {
		stopDumps := s.dumpOn(opts.DumpSignal)
		defer stopDumps()
	}
	if o, ok := dev.(SessionObserver); ok {
		o.StartSession()
	}
	err := s.run()
	// Requests still in the device see their context cancelled: the
	// frontend is gone or the daemon is shutting down.
	cancel()
	abandoned := s.teardown(ctx.Err() == nil)
	if o, ok := dev.(SessionObserver); ok && !abandoned {
		o.EndSession()
	}
	if errors.Is(err, net.ErrClosed) && ctx.Err() != nil {
		err = nil
	}
	return err
}
