package vhostuser

import (
	"context"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// inlineRescue is the period of a KickWaitInline queue's watch while it
// serves: a request that holds up the queue for one to two periods
// without any request finishing gets an idle helper goroutine woken to
// take the lead. It bounds the delay a slow request (a blob fetched from a
// registry, a blocking lock) adds to the requests behind it, and is long
// against a request served from the page cache (1 MiB READ: about 80 µs).
// The watch is a timer armed once per busy period, not per request:
// arming a runtime timer wakes the thread sleeping in the netpoller, which
// per request cost as much as the hand-off it replaces.
const inlineRescue = 500 * time.Microsecond

// inlinePool is the state the goroutines of a KickWaitInline queue share.
type inlinePool struct {
	r *runner
	// wake holds a request for one idle helper to try for the lead: the
	// queue has a backlog, or a request is being served for longer than
	// inlineRescue. Helpers block here, never on r.lead, so passing the
	// lead back and forth between requests wakes nobody.
	wake    chan struct{}
	helpers bool // more than one goroutine

	// The watch (helpers only).
	rescue  *time.Timer
	armed   atomic.Bool   // rescue is set
	serving atomic.Int32  // goroutines in serve
	served  atomic.Uint64 // requests served
	seen    atomic.Uint64 // served at the watch's last look
}

// startInline starts a queue whose leader serves the chains it pops itself
// and keeps the lead (KickWaitInline): with one request in flight, as a
// guest's single-threaded loop sends them, each request costs one wake-up
// (the leader's, by its kick) and no hand-off. Helpers (Options.Workers-1
// more goroutines) sleep until the queue has a backlog or a request is
// slow; a woken helper takes the lead if nobody holds it, and goes back to
// sleep after serving when someone else leads again.
//
// The lead token protocol is the default runner's: only the token's holder
// calls next; stopAndWait may take the token to keep everyone from
// popping. The leader puts the token back before serving, so a helper (or
// a stop) can take it while it serves, and takes it again after, unless
// someone else did.
func (r *runner) startInline(ctx context.Context, opts Options) *runner {
	r.ctx, r.cancel = context.WithCancel(ctx)
	_ = r.kick.SetReadDeadline(time.Time{}) // a previous runner may have left one
	workers := opts.Workers
	if r.index == 0 || workers <= 0 {
		workers = 1
	}
	p := &inlinePool{r: r, wake: make(chan struct{}, 1), helpers: workers > 1}
	if p.helpers {
		p.rescue = time.AfterFunc(time.Hour, p.watch)
		p.rescue.Stop()
	}
	// The first goroutine starts with the token: r.lead stays empty.
	r.workers.Add(workers)
	go p.run(true)
	for i := 1; i < workers; i++ {
		go p.run(false)
	}
	return r
}

// run is one goroutine of the pool; the first starts as the leader.
func (p *inlinePool) run(leader bool) {
	r := p.r
	defer r.workers.Done()
	// As in runner.worker: a fault in guest memory stops this queue or
	// fails one request, not the daemon.
	debug.SetPanicOnFault(true)
	for {
		if !leader {
			select {
			case <-p.wake:
			case <-r.quit:
				return
			}
		}
		// Lead for as long as this goroutine gets the token back after
		// serving.
		for leader = p.take(leader); leader; leader = p.take(false) {
			head, ok := r.next()
			if !ok {
				r.poppedO.Do(func() { close(r.popped) })
				r.halt()
				return
			}
			if p.helpers && p.backlog() {
				p.wakeOne() // a backlog: serve it on more than one thread
			}
			r.lead <- struct{}{} // never blocks: there is one token
			p.serving.Add(1)
			if p.helpers && !p.armed.Load() && p.armed.CompareAndSwap(false, true) {
				p.rescue.Reset(inlineRescue)
			}
			ok = r.serveOrStop(head)
			p.served.Add(1)
			p.serving.Add(-1)
			if !ok {
				return
			}
		}
	}
}

// backlog reports whether more chains wait in the ring (the caller leads).
// A fault reading guest memory reports none: the next pop meets it again
// and stops the queue there.
func (p *inlinePool) backlog() (yes bool) {
	defer func() {
		if recover() != nil {
			yes = false
		}
	}()
	return p.r.q.Pending()
}

// watch runs every inlineRescue while the queue serves: when no request
// finished during a whole period and one is in service, and nobody leads,
// a helper is woken to take the lead. It disarms once nothing is served.
func (p *inlinePool) watch() {
	served := p.served.Load()
	seen := p.seen.Swap(served)
	if p.serving.Load() > 0 {
		if seen == served && len(p.r.lead) > 0 {
			p.wakeOne()
		}
		p.rescue.Reset(inlineRescue)
		return
	}
	if seen != served {
		// Requests were served during the period: the queue is busy,
		// probably a guest loop sending one request at a time, each
		// finished before this look. Staying armed costs one timer
		// wake-up a period; disarming would cost a re-arm (which wakes
		// the thread sleeping in the netpoller) at the next request,
		// and a wake-up when it fires.
		p.rescue.Reset(inlineRescue)
		return
	}
	p.armed.Store(false)
	// A request that started after the look above may not have seen the
	// timer disarmed.
	if p.serving.Load() > 0 && p.armed.CompareAndSwap(false, true) {
		p.rescue.Reset(inlineRescue)
	}
}

// take reports whether the caller leads: it already holds the token (has),
// or the token is free and it takes it.
func (p *inlinePool) take(has bool) bool {
	if has {
		return true
	}
	select {
	case <-p.r.lead:
		return true
	default:
		return false
	}
}

// wakeOne asks one idle helper to try for the lead; a request already
// pending is enough.
func (p *inlinePool) wakeOne() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}
