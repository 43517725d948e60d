package metrics

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Settings are a mount's switches, nydusd's names in brackets.
type Settings struct {
	// MeasureLatency times each counted operation (measure_latency; on by
	// default in Daemon.NewMount).
	MeasureLatency bool
	// FilesAccount keeps per-file counters (iostats_files).
	FilesAccount bool
	// AccessPattern records each file's first access and read count
	// (access_pattern).
	AccessPattern bool
	// LatestReadFiles remembers the files read since the last
	// /metrics/files?latest=true (latest_read_files).
	LatestReadFiles bool
}

// Mount holds one mounted filesystem's counters (nydusd's per-RAFS
// instance metrics).
type Mount struct {
	id       string
	d        *Daemon
	c        counters
	measure  atomic.Bool
	files    atomic.Bool
	pattern  atomic.Bool
	latest   atomic.Bool
	perFile  sync.Map // uint64 -> *fileStats
	patterns sync.Map // uint64 -> *access
	latestMu sync.Mutex
	latestS  map[uint64]struct{}
}

// ID is the mount's id (its mountpoint).
func (m *Mount) ID() string { return m.id }

// Apply switches accounting on or off.
func (m *Mount) Apply(s Settings) {
	m.measure.Store(s.MeasureLatency)
	m.files.Store(s.FilesAccount)
	m.pattern.Store(s.AccessPattern)
	m.latest.Store(s.LatestReadFiles)
}

// Settings returns the current switches.
func (m *Mount) Settings() Settings {
	return Settings{MeasureLatency: m.measure.Load(), FilesAccount: m.files.Load(),
		AccessPattern: m.pattern.Load(), LatestReadFiles: m.latest.Load()}
}

// Global returns the mount's nydusd global metrics.
func (m *Mount) Global() Global {
	s := m.Settings()
	g := Global{FilesAccountEnabled: s.FilesAccount, AccessPatternEnabled: s.AccessPattern,
		RecordLatestReadFilesEnable: s.LatestReadFiles, MeasureLatency: s.MeasureLatency, ID: m.id}
	m.c.sum(&g)
	return g
}

// op is one counted operation in progress.
type op struct {
	m      *Mount
	fop    Fop
	ino    uint64
	unique uint64
	start  time.Duration // since Daemon.epoch
	slot   int           // in the inflight table, 0: not there
	// handoff: the transport times the request (slot is its).
	handoff bool
}

// begin starts counting an operation on inode ino.
func (m *Mount) begin(f Fop, ino, unique uint64) op {
	o := op{m: m, fop: f, ino: ino, unique: unique}
	if m.d.transported.Load() && unique != 0 {
		// The transport lists the request in flight and times it:
		// tell it which mount and fop to add the time to at its End,
		// and read no clock here.
		if o.slot = m.d.inflight.find(unique); o.slot > 0 {
			o.handoff = true
			return o
		}
	}
	// One monotonic clock read (time.Now reads the wall clock too).
	o.start = time.Since(m.d.epoch)
	if !m.d.transported.Load() {
		o.slot = m.d.inflight.enter(ino, f.Opcode(), unique, o.start)
	}
	return o
}

// end finishes it: ok says whether it succeeded, n is the bytes read (a
// READ) or 0.
func (o op) end(ok bool, n int) {
	m := o.m
	if o.handoff {
		// The transport finishes the accounting at its End, with the
		// request's time and the bytes that reached the guest (a
		// file-segment result's Size is what was asked for; the copy
		// stops at the end of the file).
		sl := &m.d.inflight.slots[o.slot-1]
		sl.fop.Store(int32(o.fop))
		sl.mino.Store(o.ino)
		res := int64(n)
		if !ok {
			res = -1
		}
		sl.result.Store(res)
		sl.mount.Store(m)
		return
	}
	m.d.inflight.leave(o.slot)
	var d time.Duration
	measured := m.measure.Load()
	if measured {
		d = time.Since(m.d.epoch) - o.start
	}
	m.record(o.fop, o.ino, o.unique, ok, n, d, measured)
}

// record counts a finished operation: ok says whether it succeeded, n is
// the bytes read (a READ), d its time when measured.
func (m *Mount) record(f Fop, ino, unique uint64, ok bool, n int, d time.Duration, measured bool) {
	s := m.c.pick(unique)
	s.hits[f].Add(1)
	if !ok {
		s.errors[f].Add(1)
	}
	if measured {
		m.addLatency(s, f, d, ok)
	}
	switch f {
	case FopRead:
		if ok {
			s.dataRead.Add(uint64(n))
			s.blockCount[SizeBucket(n)].Add(1)
		}
	case FopOpen:
		if ok {
			s.nrOpens.Add(1)
		}
	}
	if m.files.Load() {
		m.fileStats(ino).record(f, ok, n)
	}
	if m.pattern.Load() && ino != 0 {
		m.access(ino, f == FopRead && ok)
	}
	if f == FopRead && ok && m.latest.Load() {
		m.latestMu.Lock()
		m.latestS[ino] = struct{}{}
		m.latestMu.Unlock()
	}
}

// addLatency adds an operation's time to the fop's cumulative latency
// and, for a successful read, to read_latency_dist.
func (m *Mount) addLatency(s *shard, f Fop, d time.Duration, ok bool) {
	s.latencyUS[f].Add(uint64(d.Microseconds()))
	if f == FopRead && ok {
		s.readDist[LatencyBucket(d)].Add(1)
	}
}

// fileStats are nydusd's per-file counters (iostats_files).
type fileStats struct {
	totalFops  atomic.Uint64
	dataRead   atomic.Uint64
	blockCount [SizeBuckets]atomic.Uint64
	hits       [FopCount]atomic.Uint64
	errors     [FopCount]atomic.Uint64
}

func (f *fileStats) record(fop Fop, ok bool, n int) {
	f.totalFops.Add(1)
	f.hits[fop].Add(1)
	if !ok {
		f.errors[fop].Add(1)
	} else if fop == FopRead {
		f.dataRead.Add(uint64(n))
		f.blockCount[SizeBucket(n)].Add(1)
	}
}

func (m *Mount) fileStats(ino uint64) *fileStats {
	if v, ok := m.perFile.Load(ino); ok {
		return v.(*fileStats)
	}
	v, _ := m.perFile.LoadOrStore(ino, new(fileStats))
	return v.(*fileStats)
}

// access is one file's access-pattern record.
type access struct {
	first  time.Time
	nrRead atomic.Uint64
}

func (m *Mount) access(ino uint64, read bool) {
	v, ok := m.patterns.Load(ino)
	if !ok {
		v, _ = m.patterns.LoadOrStore(ino, &access{first: time.Now()})
	}
	if read {
		v.(*access).nrRead.Add(1)
	}
}

// File is one entry of GET /api/v1/metrics/files (nydusd's names).
type File struct {
	Ino            uint64              `json:"ino"`
	TotalFops      uint64              `json:"total_fops"`
	DataRead       uint64              `json:"data_read"`
	BlockCountRead [SizeBuckets]uint64 `json:"block_count_read"`
	FopHits        [FopCount]uint64    `json:"fop_hits"`
	FopErrors      [FopCount]uint64    `json:"fop_errors"`
}

// Files returns the per-file counters by inode (nil when iostats_files is
// off). latest returns only the files read since the previous latest call
// (latest_read_files), as inode numbers with their counters.
func (m *Mount) Files(latest bool) []File {
	var only map[uint64]struct{}
	if latest {
		m.latestMu.Lock()
		only, m.latestS = m.latestS, map[uint64]struct{}{}
		m.latestMu.Unlock()
	}
	var out []File
	m.perFile.Range(func(k, v any) bool {
		ino := k.(uint64)
		if only != nil {
			if _, ok := only[ino]; !ok {
				return true
			}
		}
		f := v.(*fileStats)
		e := File{Ino: ino, TotalFops: f.totalFops.Load(), DataRead: f.dataRead.Load()}
		for i := range e.BlockCountRead {
			e.BlockCountRead[i] = f.blockCount[i].Load()
		}
		for i := range e.FopHits {
			e.FopHits[i] = f.hits[i].Load()
			e.FopErrors[i] = f.errors[i].Load()
		}
		out = append(out, e)
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Ino < out[j].Ino })
	return out
}

// Access is one entry of GET /api/v1/metrics/pattern (nydusd's names).
type Access struct {
	Ino                  uint64 `json:"ino"`
	NrRead               uint64 `json:"nr_read"`
	FirstAccessTimeSecs  int64  `json:"first_access_time_secs"`
	FirstAccessTimeNanos int64  `json:"first_access_time_nanos"`
	firstAccess          time.Time
}

// Pattern returns the access pattern in first-access order: the order a
// prefetch list is built in.
func (m *Mount) Pattern() []Access {
	var out []Access
	m.patterns.Range(func(k, v any) bool {
		a := v.(*access)
		out = append(out, Access{Ino: k.(uint64), NrRead: a.nrRead.Load(), FirstAccessTimeSecs: a.first.Unix(),
			FirstAccessTimeNanos: int64(a.first.Nanosecond()), firstAccess: a.first})
		return true
	})
	sort.Slice(out, func(i, j int) bool {
		if !out[i].firstAccess.Equal(out[j].firstAccess) {
			return out[i].firstAccess.Before(out[j].firstAccess)
		}
		return out[i].Ino < out[j].Ino
	})
	return out
}
