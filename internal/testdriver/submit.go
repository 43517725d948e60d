package testdriver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/ring"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

// Layout says how Submit turns buffers into descriptors.
type Layout struct {
	// SegmentSize splits every buffer into descriptors of at most this
	// many bytes (0: one descriptor per buffer), placed last to first in
	// guest memory so that no two consecutive ones are adjacent (the
	// daemon would merge those back into one buffer).
	SegmentSize int
	// Indirect puts the chain in an indirect table referenced by a single
	// ring descriptor.
	Indirect bool
}

// Desc is a raw descriptor, as the guest writes it.
type Desc struct {
	Addr  uint64
	Len   uint32
	Flags uint16
	Next  uint16
}

// Descriptor flags, re-exported for tests writing raw chains.
const (
	FlagNext     = virtqueue.DescFlagNext
	FlagWrite    = virtqueue.DescFlagWrite
	FlagIndirect = virtqueue.DescFlagIndirect
)

// PutDesc encodes d as entry i of the descriptor table b.
func PutDesc(b []byte, i int, d Desc) {
	e := b[i*virtqueue.DescSize:]
	binary.LittleEndian.PutUint64(e, d.Addr)
	binary.LittleEndian.PutUint32(e[8:], d.Len)
	binary.LittleEndian.PutUint16(e[12:], d.Flags)
	binary.LittleEndian.PutUint16(e[14:], d.Next)
}

// ErrTimeout is returned when the daemon does not complete a request in time.
var ErrTimeout = errors.New("testdriver: request not completed within the timeout")

// Pending is a request in flight.
type Pending struct {
	q       *queue
	slots   []uint16
	allocs  []alloc
	writes  []alloc // writable buffers in order
	room    int
	done    chan struct{}
	n       uint32
	err     error
	timeout time.Duration
}

type alloc struct {
	gpa uint64
	n   int
}

func (p *Pending) finish(n uint32, err error) {
	p.n, p.err = n, err
	close(p.done)
}

// Done is closed when the request completes (or fails).
func (p *Pending) Done() <-chan struct{} { return p.done }

// Wait waits for the used entry (at most the driver's timeout) and returns
// the bytes the daemon wrote: the first used-length bytes of the writable
// buffers, concatenated (for StartRaw chains: empty; see Len). It frees the
// request's guest memory.
func (p *Pending) Wait() ([]byte, error) {
	if d := p.q.d.opts.HaltPoll; d > 0 {
		p.q.haltPoll(p, d)
	}
	t := time.NewTimer(p.timeout)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		// The buffers stay allocated: the device may still write them.
		return nil, ErrTimeout
	}
	defer p.free()
	if p.err != nil {
		return nil, p.err
	}
	total := 0
	for _, w := range p.writes {
		total += w.n
	}
	out := make([]byte, min(int64(p.n), int64(total)))
	rest := out
	for _, w := range p.writes {
		if len(rest) == 0 {
			break
		}
		k := min(w.n, len(rest))
		p.q.d.ram.read(rest[:k], w.gpa)
		rest = rest[k:]
	}
	return out, nil
}

// Len returns the used length once the request is done.
func (p *Pending) Len() uint32 { <-p.done; return p.n }

func (p *Pending) free() {
	for _, a := range p.allocs {
		p.q.d.heap.release(a.gpa, uint64(a.n))
	}
	p.allocs = nil
}

// Submit sends one request on queue and waits for its reply; see Start.
func (d *Driver) Submit(queue int, readable [][]byte, writableSizes []int, layout Layout) ([]byte, error) {
	p, err := d.Start(queue, readable, writableSizes, layout)
	if err != nil {
		return nil, err
	}
	return p.Wait()
}

func (d *Driver) queue(i int) (*queue, error) {
	if i < 0 || i >= len(d.queues) {
		return nil, fmt.Errorf("no queue %d", i)
	}
	return d.queues[i], nil
}

// Start lays the request out in guest RAM (readable buffers first, then
// writable ones of the given sizes), publishes it and kicks. Many requests
// may be in flight on one queue; Wait on each.
func (d *Driver) Start(queue int, readable [][]byte, writableSizes []int, layout Layout) (*Pending, error) {
	q, err := d.queue(queue)
	if err != nil {
		return nil, err
	}
	p := &Pending{q: q, done: make(chan struct{}), timeout: d.opts.Timeout}
	var descs []Desc
	// add splits the n bytes at gpa into segments and returns them in
	// chain order. Split segments are laid out last to first, so that no
	// two consecutive descriptors are adjacent in guest memory: the
	// daemon merges adjacent buffers into one, and the split must reach
	// the device.
	add := func(gpa uint64, n int, flags uint16) []alloc {
		seg := layout.SegmentSize
		if seg <= 0 || n <= seg {
			descs = append(descs, Desc{Addr: gpa, Len: uint32(n), Flags: flags})
			return []alloc{{gpa, n}}
		}
		var segs []alloc
		end := gpa + uint64(n)
		for off := 0; off < n; off += seg {
			k := min(seg, n-off)
			end -= uint64(k)
			segs = append(segs, alloc{end, k})
			descs = append(descs, Desc{Addr: end, Len: uint32(k), Flags: flags})
		}
		return segs
	}
	for _, b := range readable {
		gpa, err := d.Alloc(len(b))
		if err != nil {
			p.free()
			return nil, err
		}
		p.allocs = append(p.allocs, alloc{gpa, len(b)})
		for _, sg := range add(gpa, len(b), 0) {
			d.ram.write(sg.gpa, b[:sg.n])
			b = b[sg.n:]
		}
	}
	for _, n := range writableSizes {
		gpa, err := d.Alloc(n)
		if err != nil {
			p.free()
			return nil, err
		}
		p.allocs = append(p.allocs, alloc{gpa, n})
		p.writes = append(p.writes, add(gpa, n, FlagWrite)...)
		p.room += n
	}
	if len(descs) == 0 {
		p.free()
		return nil, errors.New("empty request")
	}
	if layout.Indirect {
		table := make([]byte, len(descs)*virtqueue.DescSize)
		for i, ds := range descs {
			if i+1 < len(descs) {
				ds.Flags |= FlagNext
				ds.Next = uint16(i + 1)
			}
			PutDesc(table, i, ds)
		}
		gpa, err := d.Alloc(len(table))
		if err != nil {
			p.free()
			return nil, err
		}
		p.allocs = append(p.allocs, alloc{gpa, len(table)})
		d.ram.write(gpa, table)
		descs = []Desc{{Addr: gpa, Len: uint32(len(table)), Flags: FlagIndirect}}
	}
	slots, err := q.reserve(len(descs))
	if err != nil {
		p.free()
		return nil, err
	}
	p.slots = slots
	for i, ds := range descs {
		if i+1 < len(descs) {
			ds.Flags |= FlagNext
			ds.Next = slots[i+1]
		}
		q.putDesc(slots[i], ds)
	}
	if err := q.publish(slots[0], p); err != nil {
		q.unreserve(slots)
		p.free()
		return nil, err
	}
	return p, nil
}

// StartRaw publishes a hand-written chain: descs are written into freshly
// reserved ring slots, descs[0] is the head. A Next below len(descs) is an
// index into descs (translated to its slot); any other Next is written as
// is. The returned Pending completes when the daemon returns the head.
func (d *Driver) StartRaw(queue int, descs []Desc) (*Pending, error) {
	q, err := d.queue(queue)
	if err != nil {
		return nil, err
	}
	slots, err := q.reserve(len(descs))
	if err != nil {
		return nil, err
	}
	for i, ds := range descs {
		if int(ds.Next) < len(descs) {
			ds.Next = slots[ds.Next]
		}
		q.putDesc(slots[i], ds)
	}
	p := &Pending{q: q, slots: slots, done: make(chan struct{}), timeout: d.opts.Timeout, room: 1 << 62}
	if err := q.publish(slots[0], p); err != nil {
		q.unreserve(slots)
		return nil, err
	}
	return p, nil
}

// PublishHead puts an arbitrary head index (for example one past the queue
// size) in the available ring and kicks. Nothing waits for it.
func (d *Driver) PublishHead(queue int, head uint16) error {
	q, err := d.queue(queue)
	if err != nil {
		return err
	}
	return q.publish(head, nil)
}

// UnexpectedUsed counts used entries the daemon returned for heads that
// were not in flight on queue (a daemon bug, or the answer to PublishHead
// with a head that happens to be valid).
func (d *Driver) UnexpectedUsed(queue int) int {
	q := d.queues[queue]
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.unexpected
}

// AvailIdx returns the driver's available index on queue (the number of
// chains published so far, modulo 2^16).
func (d *Driver) AvailIdx(queue int) uint16 {
	q := d.queues[queue]
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.availIdx
}

// InjectLostNotifications makes the driver misbehave as if notifications
// went missing on queue (a fault injector, for tests of the daemon's
// recovery): the next kicks kicks the daemon asked for are not sent, and
// the next signals wake-ups of the call eventfd are ignored (used entries
// stay unreaped until a later signal).
func (d *Driver) InjectLostNotifications(queue, kicks, signals int) {
	q := d.queues[queue]
	q.mu.Lock()
	q.dropKicks += kicks
	q.dropSignals += signals
	q.mu.Unlock()
}

// InjectStoreLoadReorder makes the driver of queue behave as if its full
// barriers did not order a store before a later load, as a guest's do not
// under QEMU TCG with a single vCPU before QEMU 8.1 (the barrier is elided
// and the host CPU lets the load pass the store; docs/notifications.md): in
// the next kicks publishes the new available index becomes visible only
// after the driver has read avail_event, and after the device has moved
// avail_event (or a bounded wait); in the next rearms interrupt re-arms,
// used_event becomes visible only after the driver has read the used index,
// and after the device has moved it. Only with EVENT_IDX. Each is the
// store-buffering outcome a barrier exists to forbid: both sides read the
// other's old value, so neither notifies.
func (d *Driver) InjectStoreLoadReorder(queue, kicks, rearms int) {
	q := d.queues[queue]
	q.mu.Lock()
	q.reorderKicks += kicks
	q.reorderRearms += rearms
	q.mu.Unlock()
}

// InjectBogusAvailIndex publishes an available index ahead chains past
// the driver's real one (a fault injector: a broken or hostile driver) and
// kicks; the returned function puts the real index back. Nothing is
// published meanwhile by this driver's other calls (they wait).
func (d *Driver) InjectBogusAvailIndex(queue int, ahead uint16) (restore func(), err error) {
	q, err := d.queue(queue)
	if err != nil {
		return nil, err
	}
	q.mu.Lock()
	ring.Store16(q.avail, 2, q.availIdx+ahead)
	ring.FullFence()
	if _, err := q.kick.Write(q.kickVal[:]); err != nil {
		ring.Store16(q.avail, 2, q.availIdx)
		q.mu.Unlock()
		return nil, fmt.Errorf("kick: %w", err)
	}
	return func() {
		ring.Store16(q.avail, 2, q.availIdx)
		ring.FullFence()
		q.mu.Unlock()
	}, nil
}
