package virtqueue

import (
	"errors"
	"fmt"
	"sync"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/ring"
)

// Descriptor flags (virtio 1.x, 2.7.5).
const (
	DescFlagNext     = 1
	DescFlagWrite    = 2
	DescFlagIndirect = 4
)

// Ring flags.
const (
	AvailFlagNoInterrupt = 1 // driver → device: do not signal (no EVENT_IDX)
	UsedFlagNoNotify     = 1 // device → driver: do not kick (no EVENT_IDX)
)

// MaxQueueSize is the largest split queue size virtio allows.
const MaxQueueSize = 32768

// DescSize is the size of one descriptor in a table.
const DescSize = 16

// RingSizes returns the byte sizes of the descriptor table, available ring
// and used ring of a split queue of the given size, event fields included.
func RingSizes(size int) (desc, avail, used int) {
	return DescSize * size, 6 + 2*size, 6 + 8*size
}

// Config is what the frontend told us about one ring.
type Config struct {
	Size uint16 // power of two, ≤ MaxQueueSize
	// Desc, Avail and Used are frontend user addresses (SET_VRING_ADDR).
	Desc, Avail, Used uint64
	// EventIdx is true when VIRTIO_F_RING_EVENT_IDX was negotiated.
	EventIdx bool
	// Base is the first available index to process (SET_VRING_BASE).
	Base uint16
}

// ErrAvailIndex reports an available index more than a queue size ahead of
// the device: the guest driver is broken or hostile. Pop returns it without
// consuming anything.
var ErrAvailIndex = errors.New("available index ahead of the device by more than the queue size")

// ChainError reports a malformed descriptor chain. When Returnable, the head
// is a valid descriptor index and the caller must give it back to the guest
// with Push(Head, 0) so the driver can reclaim its descriptors; otherwise the
// head itself was out of range and there is nothing to give back.
type ChainError struct {
	Head       uint16
	Returnable bool
	Err        error
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("descriptor chain %d: %v", e.Head, e.Err)
}

func (e *ChainError) Unwrap() error { return e.Err }

// Queue is a split virtqueue in guest memory, seen from the device.
//
// Pop, DisableNotify and EnableNotify belong to one goroutine at a time (the
// queue's kick loop). Push may be called from any number of goroutines.
type Queue struct {
	size     uint16
	mask     uint16
	eventIdx bool
	desc     []byte
	avail    []byte
	used     []byte
	pins     []*Pin

	lastAvail uint16 // owned by the popping goroutine

	pushMu  sync.Mutex
	usedIdx uint16 // guarded by pushMu
	sealed  bool   // guarded by pushMu: Push no longer touches the ring
}

// NewQueue translates the ring addresses through snap and pins the regions
// behind them until Release.
func NewQueue(snap *Snapshot, cfg Config) (*Queue, error) {
	n := int(cfg.Size)
	if n == 0 || n > MaxQueueSize || n&(n-1) != 0 {
		return nil, fmt.Errorf("queue size %d is not a power of two up to %d", n, MaxQueueSize)
	}
	if cfg.Desc%16 != 0 || cfg.Avail%2 != 0 || cfg.Used%4 != 0 {
		return nil, fmt.Errorf("misaligned ring addresses desc %#x avail %#x used %#x", cfg.Desc, cfg.Avail, cfg.Used)
	}
	q := &Queue{size: cfg.Size, mask: cfg.Size - 1, eventIdx: cfg.EventIdx, lastAvail: cfg.Base}
	dn, an, un := RingSizes(n)
	var err error
	parts := []struct {
		dst  *[]byte
		addr uint64
		n    int
		name string
	}{{&q.desc, cfg.Desc, dn, "descriptor table"}, {&q.avail, cfg.Avail, an, "available ring"}, {&q.used, cfg.Used, un, "used ring"}}
	for _, p := range parts {
		var pin *Pin
		*p.dst, pin, err = snap.PinUser(p.addr, uint64(p.n))
		if err != nil {
			q.Release()
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		q.pins = append(q.pins, pin)
	}
	q.usedIdx = ring.Load16(q.used, 2)
	return q, nil
}

// Release unpins the ring memory. The queue must not be used afterwards.
func (q *Queue) Release() {
	for _, p := range q.pins {
		p.Release()
	}
	q.pins = nil
}

// EventIdx reports whether VIRTIO_F_RING_EVENT_IDX is in use.
func (q *Queue) EventIdx() bool { return q.eventIdx }

// Size returns the queue size.
func (q *Queue) Size() uint16 { return q.size }

// LastAvail returns the index of the next available entry to pop; after all
// popped chains are pushed it is what GET_VRING_BASE reports.
func (q *Queue) LastAvail() uint16 { return q.lastAvail }

// Pending reports whether the driver has published chains not yet popped.
func (q *Queue) Pending() bool { return ring.Load16(q.avail, 2) != q.lastAvail }

// Pop takes the next available chain into c, reusing c's slices. It returns
// false when nothing is available. A malformed chain is consumed and
// reported as a *ChainError (c.Head is set, its buffers are empty).
// Buffers point into memory held by mem: keep mem until the chain is pushed.
func (q *Queue) Pop(mem *Snapshot, c *Chain) (bool, error) {
	availIdx := ring.Load16(q.avail, 2)
	if availIdx == q.lastAvail {
		return false, nil
	}
	if availIdx-q.lastAvail > q.size {
		return false, fmt.Errorf("avail idx %d, last seen %d, size %d: %w", availIdx, q.lastAvail, q.size, ErrAvailIndex)
	}
	// Read the ring entry (and the descriptors) only after the index.
	ring.LoadFence()
	head := ring.Load16(q.avail, 4+2*int(q.lastAvail&q.mask))
	q.lastAvail++
	c.Head = head
	c.Readable = c.Readable[:0]
	c.Writable = c.Writable[:0]
	if head >= q.size {
		return true, &ChainError{Head: head, Err: fmt.Errorf("head out of range (queue size %d)", q.size)}
	}
	if err := walkChain(mem, q.desc, head, int(q.size), c); err != nil {
		clear(c.Readable)
		clear(c.Writable)
		c.Readable = c.Readable[:0]
		c.Writable = c.Writable[:0]
		return true, &ChainError{Head: head, Returnable: true, Err: err}
	}
	return true, nil
}

// walkChain follows the chain starting at head in the descriptor table
// table (which holds at least size entries), appending buffers to c. At most
// maxLen buffer descriptors are followed, which also ends loops. Each
// descriptor is read once, so the guest changing it meanwhile cannot make a
// checked value differ from a used one. An indirect table is translated
// once and then walked as a slice.
func walkChain(mem *Snapshot, table []byte, head uint16, maxLen int, c *Chain) error {
	n := len(table) / DescSize
	idx := int(head)
	count := 0
	indirect := false
	writing := false
	w := sgWalker{mem: mem, dst: &c.Readable}
	for {
		if idx >= n {
			return fmt.Errorf("descriptor index %d out of range (table of %d)", idx, n)
		}
		d := table[idx*DescSize : idx*DescSize+DescSize]
		addr := le.Uint64(d[0:8])
		length := le.Uint32(d[8:12])
		flags := le.Uint16(d[12:14])
		next := le.Uint16(d[14:16])
		if flags&DescFlagIndirect != 0 {
			switch {
			case indirect:
				return errors.New("nested indirect descriptor")
			case flags&DescFlagNext != 0:
				return errors.New("indirect descriptor with NEXT set")
			case length == 0 || length%DescSize != 0:
				return fmt.Errorf("indirect table length %d is not a positive multiple of %d", length, DescSize)
			case int(length/DescSize) > maxLen:
				return fmt.Errorf("indirect table of %d entries exceeds the queue size %d", length/DescSize, maxLen)
			}
			t, err := mem.Slice(addr, uint64(length))
			if err != nil {
				return fmt.Errorf("indirect table: %w", err)
			}
			table, n, idx, indirect = t, int(length/DescSize), 0, true
			continue
		}
		count++
		if count > maxLen {
			return fmt.Errorf("chain longer than %d descriptors (loop?)", maxLen)
		}
		if flags&DescFlagWrite != 0 {
			if !writing {
				writing = true
				w.flush() // a writable buffer never merges into a readable one
				w.dst = &c.Writable
			}
		} else if writing {
			return errors.New("device-readable descriptor after a device-writable one")
		}
		if !w.extend(addr, uint64(length)) {
			if err := w.add(addr, uint64(length)); err != nil {
				return fmt.Errorf("descriptor %d: %w", idx, err)
			}
		}
		if flags&DescFlagNext == 0 {
			w.flush()
			return nil
		}
		idx = int(next)
	}
}

// sgWalker translates the buffers of one chain into host slices appended
// to *dst. It remembers the region of the last translation (a chain's
// buffers usually share one), so most descriptors cost one range check
// instead of a region search, and it holds back the last slice until the
// next buffer shows whether it continues it in the same region (the guest's
// pages of one READ are often adjacent): adjacent buffers become one slice,
// so fewer iovecs for the reply's preadv. Every buffer is still checked in
// full against its region.
type sgWalker struct {
	mem *Snapshot
	dst *[][]byte
	hit *region // region of the last lookup
	// The pending slice: pend.data[start:end], not yet appended; pend is
	// nil when there is none.
	pend       *region
	start, end uint64
}

// add translates the n bytes at gpa, like Snapshot.AppendSlices, merging
// with the pending slice when contiguous with it.
func (w *sgWalker) add(gpa, n uint64) error {
	if gpa+n < gpa {
		return fmt.Errorf("gpa %#x len %#x overflows: %w", gpa, n, ErrOutOfRange)
	}
	for n > 0 {
		r := w.hit
		if r == nil || gpa < r.gpa || gpa-r.gpa >= r.size {
			if r = w.mem.find(gpa); r == nil {
				return fmt.Errorf("gpa %#x: %w", gpa, ErrOutOfRange)
			}
			w.hit = r
		}
		off := gpa - r.gpa
		m := min(r.size-off, n)
		if r != w.pend || off != w.end {
			w.flush()
			w.pend, w.start = r, off
		}
		w.end = off + m
		gpa += m
		n -= m
	}
	return nil
}

// extend is add's fast path, small enough to inline: a buffer that
// continues the pending slice inside its region only moves the slice's end.
// It reports false, changing nothing, for any other buffer.
func (w *sgWalker) extend(gpa, n uint64) bool {
	if r := w.pend; r == nil || gpa != r.gpa+w.end || n > r.size-w.end {
		return false
	}
	w.end += n
	return true
}

// flush appends the pending slice, if any.
func (w *sgWalker) flush() {
	if w.pend != nil {
		*w.dst = append(*w.dst, w.pend.data[w.start:w.end:w.end])
		w.pend = nil
	}
}

// Push puts (head, written) in the used ring and reports whether the driver
// wants to be signalled (EVENT_IDX used_event or the NO_INTERRUPT flag).
// It is safe for concurrent use. After Seal it drops the entry and reports
// false.
func (q *Queue) Push(head uint16, written uint32) bool {
	notify, _, _ := q.PushEvent(head, written)
	return notify
}

// PushEvent is Push that also returns the used index after the push and
// what the driver had asked for when the decision was made: its used_event
// with EVENT_IDX, its available-ring flags without (for a trace of the
// notifications). A sealed queue returns false, 0, 0.
func (q *Queue) PushEvent(head uint16, written uint32) (notify bool, usedIdx, wish uint16) {
	q.pushMu.Lock()
	if q.sealed {
		q.pushMu.Unlock()
		return false, 0, 0
	}
	old := q.usedIdx
	off := 4 + 8*int(old&q.mask)
	le.PutUint32(q.used[off:off+4], uint32(head))
	le.PutUint32(q.used[off+4:off+8], written)
	// The element must be visible before the index that publishes it.
	ring.StoreFence()
	q.usedIdx = old + 1
	ring.Store16(q.used, 2, old+1)
	// And the index must be visible before we read the driver's wish.
	ring.FullFence()
	if q.eventIdx {
		wish = ring.Load16(q.avail, 4+2*int(q.size))
		notify = ring.NeedEvent(wish, old+1, old)
	} else {
		wish = ring.Load16(q.avail, 0)
		notify = wish&AvailFlagNoInterrupt == 0
	}
	q.pushMu.Unlock()
	return notify, old + 1, wish
}

// Seal makes every later Push a no-op: the ring belongs to the frontend
// again (GET_VRING_BASE answered while a request was still in the device)
// and must not change under it.
func (q *Queue) Seal() {
	q.pushMu.Lock()
	q.sealed = true
	q.pushMu.Unlock()
}

// UsedIdle reports, for a queue that has been quiet for a while, whether
// the driver may be waiting for a signal it never got: with EVENT_IDX,
// when its used_event is not the used index (it has not asked for the next
// entry, so it has not seen them all, or it is still reaping); without,
// when it has not turned interrupts off. It also returns the used index.
// Signalling then costs the driver one look at its used ring; not
// signalling, if a signal was lost, costs it the request for ever.
func (q *Queue) UsedIdle() (usedIdx uint16, maybeWaiting bool) {
	q.pushMu.Lock()
	defer q.pushMu.Unlock()
	ring.FullFence()
	if q.eventIdx {
		return q.usedIdx, ring.Load16(q.avail, 4+2*int(q.size)) != q.usedIdx
	}
	return q.usedIdx, ring.Load16(q.avail, 0)&AvailFlagNoInterrupt == 0
}

// DisableNotify asks the driver not to kick while the device is draining the
// ring. With EVENT_IDX this is implicit (avail_event is left behind).
func (q *Queue) DisableNotify() {
	if !q.eventIdx {
		ring.Store16(q.used, 0, UsedFlagNoNotify)
	}
}

// EnableNotify asks the driver to kick for the next chain and reports
// whether chains arrived meanwhile (then the caller must keep popping,
// as no kick will come for them).
func (q *Queue) EnableNotify() bool {
	pending, _ := q.EnableNotifyIdx()
	return pending
}

// EnableNotifyIdx is EnableNotify that also returns the available index it
// saw after re-arming.
func (q *Queue) EnableNotifyIdx() (pending bool, availIdx uint16) {
	if q.eventIdx {
		ring.Store16(q.used, 4+8*int(q.size), q.lastAvail)
	} else {
		ring.Store16(q.used, 0, 0)
	}
	ring.FullFence()
	availIdx = ring.Load16(q.avail, 2)
	return availIdx != q.lastAvail, availIdx
}

// RingState is what both sides of a ring show at one moment: the driver's
// fields (available index and flags, used_event), the device's as written
// in guest memory (used index and flags, avail_event) and the device's own
// counters.
type RingState struct {
	AvailIdx, AvailFlags, UsedEvent uint16
	UsedIdx, UsedFlags, AvailEvent  uint16
	LastAvail, DeviceUsed           uint16
	EventIdx                        bool
}

// State reads the ring's state. LastAvail is only meaningful when called
// by the popping goroutine (otherwise pass the value it last reported).
func (q *Queue) State() RingState {
	ring.FullFence()
	st := RingState{
		AvailFlags: ring.Load16(q.avail, 0),
		AvailIdx:   ring.Load16(q.avail, 2),
		UsedEvent:  ring.Load16(q.avail, 4+2*int(q.size)),
		UsedFlags:  ring.Load16(q.used, 0),
		UsedIdx:    ring.Load16(q.used, 2),
		AvailEvent: ring.Load16(q.used, 4+8*int(q.size)),
		LastAvail:  q.lastAvail,
		EventIdx:   q.eventIdx,
	}
	q.pushMu.Lock()
	st.DeviceUsed = q.usedIdx
	q.pushMu.Unlock()
	return st
}
