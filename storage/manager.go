package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
)

// Cache types (nydusd's cache.type).
const (
	TypeBlobcache = "blobcache"
	TypeFilecache = "filecache"
	TypeDummy     = "dummycache"
)

// Options configure a Manager.
type Options struct {
	// Type is the cache type: blobcache or filecache keep chunks in
	// WorkDir; dummycache or "" go to the backend for every read.
	Type string
	// WorkDir is the cache directory (cache.filecache.work_dir). Required
	// when the type persists.
	WorkDir string
	// Compressed keeps chunks as stored (.blob.raw) instead of
	// uncompressed (.blob.data); reads then decode every time and are
	// never zero copy.
	Compressed bool
	// MaxSize caps the bytes the cache directory's blob files use
	// (cache.filecache.max_size); 0: no cap.
	MaxSize int64
	// BatchSize is the widest merged backend request for a miss
	// (amplify_io / rafs.batch_size). 0 means 1 MiB; values below 128 KiB
	// are raised to 128 KiB.
	BatchSize uint64
	// NoAmplify turns off widening a miss to neighbouring chunks
	// (amplify_io 0); chunks of one read are still merged.
	NoAmplify bool
	// NoReadAhead keeps reads' fetches on the reader's time: the widened
	// part of a miss joins its request, nothing is read ahead and a
	// read's requests go out one after another (as before read-ahead;
	// for comparisons).
	NoReadAhead bool
	// SyncInterval is how often written chunks are synced and marked in
	// the chunk maps. 0 means 1 s.
	SyncInterval time.Duration
	// Prefetch configures the background prefetch workers.
	Prefetch PrefetchOptions
	// BackendType is reported in the backend metrics ("localfs",
	// "registry", ...).
	BackendType string
	// Log receives warnings. Nil: logrus' standard logger.
	Log logrus.FieldLogger
}

// Persistent reports whether the type keeps a cache on disk.
func (o *Options) Persistent() bool { return o.Type == TypeBlobcache || o.Type == TypeFilecache }

// ValidType reports whether t is a cache type this package serves.
func ValidType(t string) bool {
	switch t {
	case TypeBlobcache, TypeFilecache, TypeDummy, "":
		return true
	}
	return false
}

// Manager owns a cache directory and the entries open in it. It is safe
// for concurrent use.
type Manager struct {
	opts    Options
	log     logrus.FieldLogger
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	entries map[string]*entry
	closed  bool

	metrics Metrics
	backend *backend.Metrics
	// demand counts on-demand backend reads in flight and lastDemand is
	// when the last one ended (unix ns): prefetch waits while reads are
	// fetching.
	demand     atomic.Int64
	lastDemand atomic.Int64
	limiter    *limiter
	pf         prefetcher
	// ahead bounds the background fetches of reads (the widened part of
	// a miss, sequential read-ahead) in flight: a token per fetch.
	ahead chan struct{}
	// fills bounds the detached fetches of read misses (maxFills).
	fills chan struct{}

	warnMu sync.Mutex
	warned map[string]bool
}

// NewManager returns a Manager. With a persistent type the work directory
// is created when missing; a directory that cannot be used is not an
// error: reads then go to the backend and a warning is logged.
func NewManager(opts Options) (*Manager, error) {
	if !ValidType(opts.Type) {
		return nil, fmt.Errorf("storage: cache type %q is not supported (blobcache, filecache, dummycache or \"\")", opts.Type)
	}
	if opts.Persistent() && opts.WorkDir == "" {
		return nil, fmt.Errorf("storage: cache type %s needs a work_dir", opts.Type)
	}
	if opts.BatchSize == 0 {
		opts.BatchSize = 1 << 20
	}
	opts.BatchSize = max(opts.BatchSize, 128<<10)
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = time.Second
	}
	if opts.Log == nil {
		opts.Log = logrus.StandardLogger()
	}
	opts.Prefetch.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{opts: opts, log: opts.Log, ctx: ctx, cancel: cancel, done: make(chan struct{}),
		entries: map[string]*entry{}, warned: map[string]bool{}}
	m.limiter = newLimiter(opts.Prefetch.BandwidthRate)
	m.ahead = make(chan struct{}, maxAhead)
	m.fills = make(chan struct{}, maxFills)
	m.pf.init(m)
	m.backend = backend.NewMetrics(opts.BackendType)
	if opts.Persistent() {
		if err := os.MkdirAll(opts.WorkDir, 0o755); err != nil {
			m.warnOnce("workdir", "blob cache: work_dir %s cannot be created (%v): reads go to the backend", opts.WorkDir, err)
		}
	}
	go m.flushLoop()
	return m, nil
}

// Options returns the manager's settings (with defaults applied).
func (m *Manager) Options() Options { return m.opts }

// warnOnce logs a warning the first time key is seen.
func (m *Manager) warnOnce(key, format string, args ...any) {
	m.warnMu.Lock()
	seen := m.warned[key]
	m.warned[key] = true
	m.warnMu.Unlock()
	if !seen {
		m.log.Warnf(format, args...)
	}
}

// Close stops prefetch and the flusher and syncs and marks what was
// written. Entries still held by open Blobs stay open until those close
// (each closes its entry, syncing it, when it is the last).
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	<-m.done
	m.pf.wait()
	m.mu.Lock()
	es := make([]*entry, 0, len(m.entries))
	for _, e := range m.entries {
		es = append(es, e)
	}
	m.mu.Unlock()
	for _, e := range es {
		e.flush()
	}
	return nil
}

// BlobDesc describes a blob to the cache.
type BlobDesc struct {
	// ID names the blob (its digest): the backend's key and the cache
	// files' stem.
	ID string
	// ChunkCount is the number of chunks (indexes run 0..ChunkCount-1).
	// 0: the blob is not cached on disk.
	ChunkCount uint32
	// UncompressedSize is the size of .blob.data; CompressedSize the size
	// of .blob.raw (0: the backend blob's size).
	UncompressedSize uint64
	CompressedSize   uint64
	// Raw blobs (tarfs, plain EROFS devices) hold file data as is at block
	// addresses, without chunk indexes: never cached.
	Raw bool
}

// Open returns a mount's handle on the blob desc names, fetched through be
// and decoded by dec. Handles of one blob id share one cache entry; the
// entry's files are opened here when the cache persists (a failure to
// open them only disables caching for the blob). src may be nil.
func (m *Manager) Open(desc BlobDesc, be backend.Backend, dec Decoder, src ChunkSource) (*Blob, error) {
	if be == nil {
		return nil, fmt.Errorf("blob %s: no backend configured", desc.ID)
	}
	if desc.ID == "" || strings.ContainsAny(desc.ID, "/\x00") || desc.ID == "." || desc.ID == ".." {
		return nil, fmt.Errorf("blob id %q cannot name a cache file", desc.ID)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errors.New("storage: manager closed")
	}
	e := m.entries[desc.ID]
	if e == nil || !e.sameShape(desc) {
		if e != nil {
			m.log.Warnf("blob cache: blob %s opened with a different shape than an open mount has; not sharing its cache entry", desc.ID)
			e = newEntry(m, desc, false)
		} else {
			e = newEntry(m, desc, m.opts.Persistent())
			m.entries[desc.ID] = e
		}
	}
	e.refs++
	m.metrics.entries.Store(int64(len(m.entries)))
	b := &Blob{m: m, e: e, be: be, dec: dec, src: src}
	b.bg, b.stopBG = context.WithCancel(m.ctx)
	return b, nil
}

// release drops a handle's reference on e.
func (m *Manager) release(e *entry) error {
	m.mu.Lock()
	e.refs--
	last := e.refs == 0
	if last && m.entries[e.desc.ID] == e {
		delete(m.entries, e.desc.ID)
	}
	m.metrics.entries.Store(int64(len(m.entries)))
	m.mu.Unlock()
	if last {
		return e.close()
	}
	return nil
}

// flushLoop persists readiness every SyncInterval and enforces MaxSize.
func (m *Manager) flushLoop() {
	defer close(m.done)
	t := time.NewTicker(m.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		es := make([]*entry, 0, len(m.entries))
		for _, e := range m.entries {
			es = append(es, e)
		}
		m.mu.Unlock()
		for _, e := range es {
			e.flush()
		}
		if m.opts.MaxSize > 0 && m.opts.Persistent() {
			m.evict()
		}
	}
}

// cacheSuffixes are the files of one blob in the cache directory.
var cacheSuffixes = []string{".blob.data", ".blob.raw", ".blob.data.chunk_map", ".blob.raw.chunk_map", ".blob.meta"}

// evict removes whole blobs that no mount has open, least recently used
// first, until the cache directory's blob files fit MaxSize.
func (m *Manager) evict() {
	ents, err := os.ReadDir(m.opts.WorkDir)
	if err != nil {
		return
	}
	type blobUse struct {
		id    string
		bytes int64
		used  time.Time
	}
	byID := map[string]*blobUse{}
	var total int64
	for _, de := range ents {
		name := de.Name()
		for _, s := range cacheSuffixes {
			if !strings.HasSuffix(name, s) {
				continue
			}
			id := strings.TrimSuffix(name, s)
			fi, err := de.Info()
			if err != nil {
				break
			}
			u := byID[id]
			if u == nil {
				u = &blobUse{id: id}
				byID[id] = u
			}
			n := diskBytes(fi)
			u.bytes += n
			total += n
			if fi.ModTime().After(u.used) {
				u.used = fi.ModTime()
			}
			break
		}
	}
	if total <= m.opts.MaxSize {
		return
	}
	var cands []*blobUse
	m.mu.Lock()
	for id, u := range byID {
		if m.entries[id] == nil {
			cands = append(cands, u)
		}
	}
	m.mu.Unlock()
	sort.Slice(cands, func(i, j int) bool { return cands[i].used.Before(cands[j].used) })
	for _, u := range cands {
		if total <= m.opts.MaxSize {
			break
		}
		m.mu.Lock()
		open := m.entries[u.id] != nil
		if !open {
			for _, s := range cacheSuffixes {
				os.Remove(filepath.Join(m.opts.WorkDir, u.id+s))
			}
		}
		m.mu.Unlock()
		if !open {
			total -= u.bytes
			m.metrics.evicted.Add(1)
			m.log.Infof("blob cache: evicted blob %s (%d bytes) to stay under max_size %d", u.id, u.bytes, m.opts.MaxSize)
		}
	}
}
