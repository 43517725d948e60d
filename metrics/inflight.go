package metrics

import (
	"sort"
	"sync/atomic"
	"time"
)

// inflightSlots bounds the requests /metrics/inflight can show at once;
// more are still served, just not listed.
const inflightSlots = 512

// inflightSlot is one request in progress; key is its FUSE unique + 1 (0:
// free).
type inflightSlot struct {
	key   atomic.Uint64
	ino   atomic.Uint64
	fop   atomic.Int64
	start atomic.Int64 // unix nanoseconds
	_     [32]byte
}

// inflight is a lock-free table of the requests in progress: a request
// claims a slot near its unique's hash with one CAS and frees it with one
// store.
type inflight struct {
	slots [inflightSlots]inflightSlot
}

func (t *inflight) enter(ino uint64, f Fop, unique uint64, start time.Time) *inflightSlot {
	key := unique + 1
	for i := range uint64(16) {
		s := &t.slots[(unique+i)%inflightSlots]
		if s.key.Load() == 0 && s.key.CompareAndSwap(0, key) {
			s.ino.Store(ino)
			s.fop.Store(int64(f))
			s.start.Store(start.UnixNano())
			return s
		}
	}
	return nil
}

func (t *inflight) leave(s *inflightSlot) {
	if s != nil {
		s.start.Store(0)
		s.key.Store(0)
	}
}

// Inflight is one entry of GET /api/v1/metrics/inflight (nydusd's names).
type Inflight struct {
	Inode         uint64 `json:"inode"`
	Opcode        uint32 `json:"opcode"`
	Unique        uint64 `json:"unique"`
	TimestampSecs int64  `json:"timestamp_secs"`
}

func (t *inflight) list() []Inflight {
	var out []Inflight
	for i := range t.slots {
		s := &t.slots[i]
		key := s.key.Load()
		if key == 0 {
			continue
		}
		e := Inflight{Inode: s.ino.Load(), Opcode: Fop(s.fop.Load()).Opcode(), Unique: key - 1}
		start := s.start.Load()
		if s.key.Load() != key || start == 0 {
			continue // finished while we looked
		}
		e.TimestampSecs = start / int64(time.Second)
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Unique < out[j].Unique })
	return out
}
