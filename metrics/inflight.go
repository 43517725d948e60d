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
	op    atomic.Uint32
	start atomic.Int64 // nanoseconds since Daemon.epoch, +1 (0: unset)
	// Set by a counted filesystem under the transport (Mount.begin):
	// the mount and fop whose latency the transport adds at End, and the
	// operation's result (bytes read, or -1: failed).
	mount  atomic.Pointer[Mount]
	fop    atomic.Int32
	result atomic.Int64
	mino   atomic.Uint64 // the inode in the mount (ino is the guest's node id)
}

// inflight is a lock-free table of the requests in progress: a request
// claims a slot near its unique's hash with one CAS and frees it with one
// store.
type inflight struct {
	slots [inflightSlots]inflightSlot
}

// enter records a request with FUSE opcode op; it returns the slot's
// index + 1 for leave, or 0 when the table is full around its place.
func (t *inflight) enter(ino uint64, op uint32, unique uint64, start time.Duration) int {
	key := unique + 1
	for i := range uint64(16) {
		idx := (unique + i) % inflightSlots
		s := &t.slots[idx]
		if s.key.Load() == 0 && s.key.CompareAndSwap(0, key) {
			s.ino.Store(ino)
			s.op.Store(op)
			s.start.Store(int64(start) + 1)
			return int(idx) + 1
		}
	}
	return 0
}

// find returns the slot (index + 1) of the request with FUSE unique, or
// 0.
func (t *inflight) find(unique uint64) int {
	key := unique + 1
	for i := range uint64(16) {
		idx := (unique + i) % inflightSlots
		if t.slots[idx].key.Load() == key {
			return int(idx) + 1
		}
	}
	return 0
}

func (t *inflight) leave(slot int) {
	if slot > 0 {
		s := &t.slots[slot-1]
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

func (t *inflight) list(epoch time.Time) []Inflight {
	var out []Inflight
	for i := range t.slots {
		s := &t.slots[i]
		key := s.key.Load()
		if key == 0 {
			continue
		}
		e := Inflight{Inode: s.ino.Load(), Opcode: s.op.Load(), Unique: key - 1}
		start := s.start.Load()
		if s.key.Load() != key || start == 0 {
			continue // finished while we looked
		}
		e.TimestampSecs = epoch.Add(time.Duration(start - 1)).Unix()
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Unique < out[j].Unique })
	return out
}
