package storage

import (
	"errors"
	"path/filepath"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
)

// Settings are what a mount's nydusd config says about its cache and
// prefetch, mapped from backend.Config.
type Settings struct {
	Cache Options
	// Prefetch is set when the config enables prefetch (rafs.prefetch /
	// fs_prefetch, or cache.prefetch); PrefetchAll is prefetch_all.
	Prefetch    bool
	PrefetchAll bool
}

// SettingsFromConfig maps a nydusd config's cache section (type,
// work_dir, compressed, our max_size), amplify_io / rafs.batch_size and prefetch
// section onto storage settings. The rafs prefetch section wins over the
// cache's when both are enabled.
func SettingsFromConfig(c *backend.Config) Settings {
	s := Settings{Cache: Options{
		Type:        c.Cache.Type,
		WorkDir:     c.Cache.WorkDir(),
		Compressed:  c.Cache.Compressed,
		MaxSize:     max(c.Cache.FileCache.MaxSize, 0),
		BackendType: c.Backend.Type,
	}}
	switch {
	case c.Rafs.BatchSize == 0:
		s.Cache.NoAmplify = true
	case c.Rafs.BatchSize > 0:
		s.Cache.BatchSize = uint64(c.Rafs.BatchSize)
	}
	p := c.Rafs.Prefetch
	if !p.Enable && c.Cache.Prefetch.Enable {
		p = c.Cache.Prefetch
	}
	s.Prefetch, s.PrefetchAll = p.Enable, p.Enable && p.PrefetchAll
	s.Cache.Prefetch = PrefetchOptions{Threads: p.Threads, BatchSize: uint64(max(p.BatchSize, 0)),
		BandwidthRate: int64(max(p.BandwidthLimit, 0))}
	return s
}

// Pool shares Managers between mounts: mounts whose configs name the same
// cache type, directory and compression get one Manager, so a blob they
// share has one cache entry and one fetch per chunk. The first mount's
// other settings (batch sizes, prefetch workers and bandwidth) apply to
// the Manager for as long as it lives.
type Pool struct {
	log  logrus.FieldLogger
	mu   sync.Mutex
	mgrs map[poolKey]*pooled
}

type poolKey struct {
	typ, dir   string
	compressed bool
}

type pooled struct {
	m    *Manager
	refs int
}

// NewPool returns an empty pool; log is the Managers' logger.
func NewPool(log logrus.FieldLogger) *Pool {
	return &Pool{log: log, mgrs: map[poolKey]*pooled{}}
}

// Get returns the Manager for o (created on first use) and the function
// that releases it; the last release closes it.
func (p *Pool) Get(o Options) (*Manager, func() error, error) {
	if !o.Persistent() {
		o.Type, o.WorkDir = "", "" // every non-persistent cache is the same
	} else if abs, err := filepath.Abs(o.WorkDir); err == nil {
		o.WorkDir = abs
	}
	k := poolKey{o.Type, o.WorkDir, o.Compressed && o.Persistent()}
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.mgrs[k]
	if e == nil {
		if o.Log == nil {
			o.Log = p.log
		}
		m, err := NewManager(o)
		if err != nil {
			return nil, nil, err
		}
		e = &pooled{m: m}
		p.mgrs[k] = e
	}
	e.refs++
	var once sync.Once
	return e.m, func() error {
		var err error
		once.Do(func() {
			p.mu.Lock()
			e.refs--
			last := e.refs == 0
			if last {
				delete(p.mgrs, k)
			}
			p.mu.Unlock()
			if last {
				err = e.m.Close()
			}
		})
		return err
	}, nil
}

// Close closes every Manager still in the pool.
func (p *Pool) Close() error {
	p.mu.Lock()
	ms := p.mgrs
	p.mgrs = map[poolKey]*pooled{}
	p.mu.Unlock()
	var errs []error
	for _, e := range ms {
		errs = append(errs, e.m.Close())
	}
	return errors.Join(errs...)
}

// Metrics sums the blob cache counters of the pool's Managers (nydusd
// keeps them per blob cache; the daemon-wide sum is what one image per
// daemon, Kata's case, reports the same way).
func (p *Pool) Metrics() BlobcacheMetrics {
	out := BlobcacheMetrics{UnderlyingFiles: []string{}, DataAllReady: true}
	for _, m := range p.managers() {
		s := m.Metrics()
		out.UnderlyingFiles = append(out.UnderlyingFiles, s.UnderlyingFiles...)
		if out.StorePath == "" {
			out.StorePath = s.StorePath
		}
		out.PartialHits += s.PartialHits
		out.WholeHits += s.WholeHits
		out.Total += s.Total
		out.EntriesCount += s.EntriesCount
		out.PrefetchDataAmount += s.PrefetchDataAmount
		out.PrefetchRequestsCount += s.PrefetchRequestsCount
		out.PrefetchWorkers += s.PrefetchWorkers
		out.PrefetchUnmergedChunks += s.PrefetchUnmergedChunks
		out.PrefetchCumulativeMs += s.PrefetchCumulativeMs
		if s.PrefetchBeginTimeSecs > 0 && (out.PrefetchBeginTimeSecs == 0 || s.PrefetchBeginTimeSecs < out.PrefetchBeginTimeSecs) {
			out.PrefetchBeginTimeSecs, out.PrefetchBeginTimeMillis = s.PrefetchBeginTimeSecs, s.PrefetchBeginTimeMillis
		}
		if s.PrefetchEndTimeSecs > out.PrefetchEndTimeSecs {
			out.PrefetchEndTimeSecs, out.PrefetchEndTimeMillis = s.PrefetchEndTimeSecs, s.PrefetchEndTimeMillis
		}
		out.DataAllReady = out.DataAllReady && s.DataAllReady
		out.WriteErrors += s.WriteErrors
		out.EvictedBlobs += s.EvictedBlobs
		out.ReadAheadBytes += s.ReadAheadBytes
		out.ReadAheadHints += s.ReadAheadHints
	}
	return out
}

// BackendMetrics sums the backend counters of the pool's Managers.
func (p *Pool) BackendMetrics() backend.BackendMetrics {
	var out backend.BackendMetrics
	for _, m := range p.managers() {
		out.Add(m.BackendMetrics())
	}
	return out
}

func (p *Pool) managers() []*Manager {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*Manager, 0, len(p.mgrs))
	for _, e := range p.mgrs {
		out = append(out, e.m)
	}
	return out
}
