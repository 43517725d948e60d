package metrics

import (
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoMount is returned for an id no mount has.
var ErrNoMount = errors.New("no counter found for this id")

// Daemon holds the counters of one daemon: its mounts, the requests in
// flight, recent errors and the transport's series.
type Daemon struct {
	// Defaults are the settings of new mounts.
	defaults Settings

	mu     sync.RWMutex
	mounts map[string]*Mount

	inflight inflight
	epoch    time.Time // the origin of the monotonic timestamps of the hot path
	// transported is set once the Transport has seen a request: from then
	// on it keeps the inflight table.
	transported atomic.Bool
	Events      *Events
	Transport   *Transport
}

// Options configure a Daemon.
type Options struct {
	// Defaults are applied to each new mount (a mount's config can change
	// them with Mount.Apply).
	Defaults Settings
	// Transport configures the per-request observer.
	Transport TransportOptions
}

// NewDaemon returns an empty set of counters.
func NewDaemon(o Options) *Daemon {
	d := &Daemon{defaults: o.Defaults, mounts: map[string]*Mount{}, Events: NewEvents(0, 0), epoch: time.Now()}
	d.Transport = newTransport(d, o.Transport)
	return d
}

// Defaults returns the settings new mounts get.
func (d *Daemon) Defaults() Settings { return d.defaults }

// Mount returns the counters of the mount id, creating them with the
// defaults the first time. A remount keeps its counters.
func (d *Daemon) Mount(id string) *Mount {
	d.mu.Lock()
	defer d.mu.Unlock()
	if m, ok := d.mounts[id]; ok {
		return m
	}
	m := &Mount{id: id, d: d, latestS: map[uint64]struct{}{}}
	m.Apply(d.defaults)
	d.mounts[id] = m
	return m
}

// Remove forgets the counters of an unmounted id.
func (d *Daemon) Remove(id string) {
	d.mu.Lock()
	delete(d.mounts, id)
	d.mu.Unlock()
}

// Lookup returns the counters of mount id.
func (d *Daemon) Lookup(id string) (*Mount, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	m, ok := d.mounts[id]
	if !ok {
		return nil, ErrNoMount
	}
	return m, nil
}

// Mounts returns every mount's counters, by id.
func (d *Daemon) Mounts() []*Mount {
	d.mu.RLock()
	out := make([]*Mount, 0, len(d.mounts))
	for _, m := range d.mounts {
		out = append(out, m)
	}
	d.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// Global returns the daemon's totals over all mounts, or the one mount's
// metrics (with its settings) when there is exactly one.
func (d *Daemon) Global() Global {
	ms := d.Mounts()
	if len(ms) == 1 {
		return ms[0].Global()
	}
	g := Global{MeasureLatency: d.defaults.MeasureLatency, FilesAccountEnabled: d.defaults.FilesAccount,
		AccessPatternEnabled: d.defaults.AccessPattern, RecordLatestReadFilesEnable: d.defaults.LatestReadFiles}
	for _, m := range ms {
		mg := m.Global()
		g.add(&mg)
	}
	return g
}

// Inflight returns the requests in progress, oldest unique first.
func (d *Daemon) Inflight() []Inflight { return d.inflight.list(d.epoch) }
