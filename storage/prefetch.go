package storage

import (
	"context"
	"sort"
	"sync"
	"time"
)

// PrefetchOptions configure the prefetch workers (nydusd's fs_prefetch /
// [rafs.prefetch] / [cache.prefetch]).
type PrefetchOptions struct {
	// Threads is the most background workers (threads_count / threads);
	// 0 means 8.
	Threads int
	// BatchSize is the widest merged prefetch request (merging_size /
	// batch_size); 0 means 1 MiB.
	BatchSize uint64
	// BandwidthRate limits prefetch to this many bytes per second
	// (bandwidth_rate / bandwidth_limit); 0: no limit. The bucket holds
	// at least 16 MiB so that one chunk always fits.
	BandwidthRate int64
}

func (o *PrefetchOptions) defaults() {
	if o.Threads <= 0 {
		o.Threads = 8
	}
	o.Threads = min(o.Threads, 1024)
	if o.BatchSize == 0 {
		o.BatchSize = 1 << 20
	}
}

// prefetcher runs queued prefetch requests on up to Threads workers.
type prefetcher struct {
	m       *Manager
	mu      sync.Mutex
	queue   []pfReq
	running int
	wg      sync.WaitGroup
	// pass lets one request at a time through while guest reads keep
	// the backend busy for longer than yield waits.
	pass chan struct{}
}

type pfReq struct {
	ctx    context.Context
	b      *Blob
	chunks []Chunk
	job    *PrefetchJob
}

// PrefetchJob is one Prefetch call's requests.
type PrefetchJob struct {
	mu      sync.Mutex
	pending int
	done    chan struct{}
	cancel  context.CancelFunc
	stop    func() bool
}

// Wait blocks until every request of the job ran (or was dropped) or ctx
// ends.
func (j *PrefetchJob) Wait(ctx context.Context) error {
	select {
	case <-j.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Cancel drops the job's requests that have not run.
func (j *PrefetchJob) Cancel() { j.cancel() }

func (j *PrefetchJob) finish() {
	j.mu.Lock()
	j.pending--
	last := j.pending == 0
	j.mu.Unlock()
	if last {
		j.stop()
		j.cancel()
		close(j.done)
	}
}

func (p *prefetcher) init(m *Manager) { p.m, p.pass = m, make(chan struct{}, 1) }

func (p *prefetcher) wait() { p.wg.Wait() }

// Prefetch queues chunks of b to be fetched into the cache in the
// background, merged into requests of at most the prefetch batch size. It
// stops when ctx ends (the mount goes away) or the manager closes. Without
// a persistent cache it does nothing.
func (m *Manager) Prefetch(ctx context.Context, b *Blob, chunks []Chunk) *PrefetchJob {
	jctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(m.ctx, cancel)
	job := &PrefetchJob{done: make(chan struct{}), cancel: cancel, stop: stop}
	if !b.e.persist || len(chunks) == 0 {
		stop()
		cancel()
		close(job.done)
		return job
	}
	cs := append([]Chunk(nil), chunks...)
	sort.Slice(cs, func(i, j int) bool { return cs[i].CompressedOffset < cs[j].CompressedOffset })
	var reqs []pfReq
	batch := m.opts.Prefetch.BatchSize
	for start := 0; start < len(cs); {
		end := start + 1
		first := cs[start].CompressedOffset
		last := first + uint64(cs[start].CompressedSize)
		for end < len(cs) {
			c := cs[end]
			if c.CompressedOffset < last && c.Index == cs[end-1].Index {
				end++ // duplicate
				continue
			}
			if c.CompressedOffset < last || c.CompressedOffset-last > maxGap || c.CompressedOffset+uint64(c.CompressedSize)-first > batch {
				break
			}
			last = c.CompressedOffset + uint64(c.CompressedSize)
			end++
		}
		reqs = append(reqs, pfReq{ctx: jctx, b: b, chunks: cs[start:end], job: job})
		start = end
	}
	m.metrics.prefetchUnmerged.Add(int64(len(chunks)))
	m.metrics.prefetchRequests.Add(int64(len(reqs)))
	m.metrics.prefetchBegin.CompareAndSwap(0, time.Now().UnixMilli())
	job.pending = len(reqs)
	p := &m.pf
	p.mu.Lock()
	p.queue = append(p.queue, reqs...)
	for p.running < m.opts.Prefetch.Threads && p.running < len(p.queue) {
		p.running++
		m.metrics.prefetchWorkers.Store(int64(p.running))
		p.wg.Add(1)
		go p.work()
	}
	p.mu.Unlock()
	return job
}

func (p *prefetcher) work() {
	defer p.wg.Done()
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			p.running--
			p.m.metrics.prefetchWorkers.Store(int64(p.running))
			if p.running == 0 {
				p.m.metrics.prefetchEnd.Store(time.Now().UnixMilli())
			}
			p.mu.Unlock()
			return
		}
		r := p.queue[0]
		p.queue[0] = pfReq{}
		p.queue = p.queue[1:]
		p.mu.Unlock()
		release := p.yield(r.ctx)
		if r.ctx.Err() == nil && r.b.enter() {
			start := time.Now()
			mine, _ := r.b.claim(r.chunks, true)
			if len(mine) > 0 {
				r.b.fetchRuns(r.ctx, mine, true, false)
			}
			r.b.leave()
			p.m.metrics.prefetchMillis.Add(time.Since(start).Milliseconds())
		}
		release()
		r.job.finish()
	}
}

// demandQuiet is how long guest reads must have left the backend alone
// before a prefetch request starts.
const demandQuiet = 20 * time.Millisecond

// yield holds a prefetch request back while guest reads are fetching (or
// fetched within demandQuiet), so that they get the backend and the CPU
// first; for at most a second at a time, so that prefetch still
// progresses under a steady read load, but then one request at a time
// (the pass), not every worker at once. The caller calls the returned
// function when its request is done.
func (p *prefetcher) yield(ctx context.Context) (release func()) {
	deadline := time.Now().Add(time.Second)
	for {
		busy := p.m.demand.Load() > 0 || time.Since(time.Unix(0, p.m.lastDemand.Load())) < demandQuiet
		if !busy {
			return func() {}
		}
		if time.Now().After(deadline) {
			select {
			case p.pass <- struct{}{}:
				return func() { <-p.pass }
			default:
			}
		}
		t := time.NewTimer(2 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return func() {}
		case <-t.C:
		}
	}
}
