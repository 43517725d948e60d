package testdriver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/ring"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

// queue is the guest driver's side of one split ring.
type queue struct {
	d                          *Driver
	index                      int
	size                       uint16
	descGPA, availGPA, usedGPA uint64
	desc, avail, used          []byte
	kick, call                 *os.File

	mu       sync.Mutex
	cond     *sync.Cond
	free     []uint16
	availIdx uint16
	pending  map[uint16]*Pending
	closed   error

	reaperDone chan struct{}
	// collectMu serializes collect: the reaper's and a halt-polling
	// Wait's.
	collectMu sync.Mutex
	lastUsed  uint16 // under collectMu
	kickVal   [8]byte
	// unexpected counts used entries for heads not in flight.
	unexpected int
	// Faults to inject (guarded by mu): kicks to leave out and
	// used-buffer signals to ignore.
	dropKicks, dropSignals int
	// Publishes and interrupt re-arms to make with their store made
	// visible only after their load (see InjectStoreLoadReorder).
	reorderKicks, reorderRearms int
}

// reorderWindow bounds how long a reordered store is held back.
const reorderWindow = 300 * time.Millisecond

// waitChange16 waits, at most d, until the u16 at b[off] is no longer v.
func waitChange16(b []byte, off int, v uint16, d time.Duration) {
	end := time.Now().Add(d)
	for ring.Load16(b, off) == v && time.Now().Before(end) {
		time.Sleep(20 * time.Microsecond)
	}
}

// takeReorderRearm reports whether the next interrupt re-arm is to be
// reordered, and counts it.
func (q *queue) takeReorderRearm() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.reorderRearms > 0 && q.eventIdx() {
		q.reorderRearms--
		return true
	}
	return false
}

// layoutQueues places every ring at the start of the first RAM region and
// returns the first free guest-physical address after them.
func (d *Driver) layoutQueues() (uint64, error) {
	n := d.opts.QueueSize
	if n&(n-1) != 0 || n > virtqueue.MaxQueueSize {
		return 0, fmt.Errorf("queue size %d is not a power of two up to %d", n, virtqueue.MaxQueueSize)
	}
	dn, an, un := virtqueue.RingSizes(n)
	r0 := d.ram.regions[0]
	gpa := r0.gpa
	align := func(a uint64) { gpa = (gpa + a - 1) &^ (a - 1) }
	for i := 0; i < 1+d.opts.RequestQueues; i++ {
		q := &queue{d: d, index: i, size: uint16(n), pending: map[uint16]*Pending{}, kickVal: [8]byte{1},
			availIdx: d.opts.StartIndex, lastUsed: d.opts.StartIndex}
		q.cond = sync.NewCond(&q.mu)
		align(16)
		q.descGPA = gpa
		gpa += uint64(dn)
		align(4)
		q.availGPA = gpa
		gpa += uint64(an)
		align(4)
		q.usedGPA = gpa
		gpa += uint64(un)
		if gpa > r0.gpa+uint64(len(r0.data)) {
			return 0, errors.New("first RAM region too small for the rings")
		}
		q.desc = r0.data[q.descGPA-r0.gpa:][:dn]
		q.avail = r0.data[q.availGPA-r0.gpa:][:an]
		q.used = r0.data[q.usedGPA-r0.gpa:][:un]
		ring.Store16(q.avail, 2, q.availIdx)
		ring.Store16(q.used, 2, q.lastUsed)
		for j := 0; j < n; j++ {
			q.free = append(q.free, uint16(j))
		}
		var err error
		if q.kick, err = eventfd(); err != nil {
			return 0, err
		}
		if q.call, err = eventfd(); err != nil {
			return 0, err
		}
		d.queues = append(d.queues, q)
	}
	align(4096)
	return gpa, nil
}

func (q *queue) uva(gpa uint64) uint64 {
	r0 := q.d.ram.regions[0]
	return r0.uva() + (gpa - r0.gpa)
}

func (q *queue) eventIdx() bool { return q.d.features&(1<<29) != 0 }

func (q *queue) startReaper() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.reaperDone != nil {
		return
	}
	q.reaperDone = make(chan struct{})
	go q.reap()
}

func (q *queue) waitReaper() {
	q.mu.Lock()
	done := q.reaperDone
	q.mu.Unlock()
	if done != nil {
		_ = q.call.SetReadDeadline(time.Unix(1, 0))
		<-done
	}
}

// close fails every pending request and wakes every waiter.
func (q *queue) close(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed == nil {
		q.closed = err
	}
	for head, p := range q.pending {
		p.finish(0, err)
		delete(q.pending, head)
	}
	q.cond.Broadcast()
}

// resetForReconnect makes the ring usable again after close: descriptors
// of failed requests return to the free list and the reaper may restart.
func (q *queue) resetForReconnect() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = nil
	q.reaperDone = nil
	q.free = q.free[:0]
	for j := 0; j < int(q.size); j++ {
		q.free = append(q.free, uint16(j))
	}
	_ = q.call.SetReadDeadline(time.Time{})
	// Consider everything published as consumed.
	q.collectMu.Lock()
	q.lastUsed = ring.Load16(q.used, 2)
	q.collectMu.Unlock()
}

// reap collects used entries whenever the call eventfd fires.
func (q *queue) reap() {
	defer close(q.reaperDone)
	var buf [8]byte
	for {
		q.collectMu.Lock()
		q.collect()
		q.collectMu.Unlock()
		for {
			if _, err := q.call.Read(buf[:]); err != nil {
				return
			}
			q.mu.Lock()
			lost := q.dropSignals > 0
			if lost {
				q.dropSignals--
			}
			q.mu.Unlock()
			if !lost {
				break
			}
		}
	}
}

// haltPoll waits at most d for p by collecting used entries itself,
// yielding between looks (see Options.HaltPoll), and counts p in
// HaltPolled when its own look completed it.
func (q *queue) haltPoll(p *Pending, d time.Duration) {
	end := time.Now().Add(d)
	for {
		select {
		case <-p.done: // the reaper collected it
			return
		default:
		}
		if q.collectMu.TryLock() {
			if ring.Load16(q.used, 2) != q.lastUsed {
				q.collect()
			}
			q.collectMu.Unlock()
			select {
			case <-p.done:
				q.d.haltPolled.Add(1)
				return
			default:
			}
		}
		if !time.Now().Before(end) {
			return
		}
		runtime.Gosched()
	}
}

// collect takes used entries as Linux's virtio_ring does from its
// interrupt handler (virtqueue_disable_cb, virtqueue_get_buf until empty,
// then virtqueue_enable_cb, which re-arms the interrupt and looks once more
// after a full barrier): callbacks are off while draining, and with
// EVENT_IDX disabling writes used_event = 0, so the device only signals on
// the index crossing zero meanwhile.
func (q *queue) collect() {
	for {
		if q.eventIdx() {
			ring.Store16(q.avail, 4+2*int(q.size), 0)
		} else {
			ring.Store16(q.avail, 0, virtqueue.AvailFlagNoInterrupt)
		}
		usedIdx := ring.Load16(q.used, 2)
		ring.LoadFence()
		for q.lastUsed != usedIdx {
			off := 4 + 8*int(q.lastUsed%q.size)
			id := binary.LittleEndian.Uint32(q.used[off:])
			n := binary.LittleEndian.Uint32(q.used[off+4:])
			q.lastUsed++
			q.complete(id, n)
			if q.lastUsed == usedIdx {
				usedIdx = ring.Load16(q.used, 2)
				ring.LoadFence()
			}
		}
		if q.takeReorderRearm() {
			// The store of used_event reaches memory only after the load
			// of the used index, and after the device moved it (a full
			// barrier that is not one).
			seen := ring.Load16(q.used, 2)
			if seen == q.lastUsed {
				waitChange16(q.used, 2, seen, reorderWindow)
			}
			ring.Store16(q.avail, 4+2*int(q.size), q.lastUsed)
			if seen == q.lastUsed {
				return
			}
			continue
		}
		// Re-enable: ask for a signal on the very next used entry, then
		// look again in case one was published before the device could
		// see the request.
		if q.eventIdx() {
			ring.Store16(q.avail, 4+2*int(q.size), q.lastUsed)
		} else {
			ring.Store16(q.avail, 0, 0)
		}
		ring.FullFence()
		if ring.Load16(q.used, 2) == q.lastUsed {
			return
		}
	}
}

func (q *queue) complete(id, n uint32) {
	q.mu.Lock()
	p := q.pending[uint16(id)]
	if id >= uint32(q.size) || p == nil {
		q.unexpected++
		q.mu.Unlock()
		return
	}
	delete(q.pending, uint16(id))
	q.free = append(q.free, p.slots...)
	q.cond.Broadcast()
	q.mu.Unlock()
	if int64(n) > int64(p.room) {
		p.finish(n, fmt.Errorf("device wrote %d bytes into %d", n, p.room))
		return
	}
	p.finish(n, nil)
}

// reserve takes k free descriptors, waiting for in-flight requests to
// return some.
func (q *queue) reserve(k int) ([]uint16, error) {
	if k > int(q.size) {
		return nil, fmt.Errorf("%d descriptors do not fit a queue of %d", k, q.size)
	}
	deadline := time.Now().Add(q.d.opts.Timeout)
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.free) < k && q.closed == nil {
		if time.Now().After(deadline) {
			return nil, errors.New("no free descriptors within the timeout")
		}
		t := time.AfterFunc(10*time.Millisecond, q.cond.Broadcast)
		q.cond.Wait()
		t.Stop()
	}
	if q.closed != nil {
		return nil, q.closed
	}
	s := append([]uint16(nil), q.free[len(q.free)-k:]...)
	q.free = q.free[:len(q.free)-k]
	return s, nil
}

func (q *queue) unreserve(s []uint16) {
	q.mu.Lock()
	q.free = append(q.free, s...)
	q.cond.Broadcast()
	q.mu.Unlock()
}

// publish makes head available and kicks if the device wants it.
func (q *queue) publish(head uint16, p *Pending) error {
	q.mu.Lock()
	if q.closed != nil {
		q.mu.Unlock()
		return q.closed
	}
	if p != nil {
		q.pending[head] = p
	}
	old := q.availIdx
	binary.LittleEndian.PutUint16(q.avail[4+2*int(old%q.size):], head)
	ring.StoreFence()
	q.availIdx = old + 1
	var kick bool
	if q.reorderKicks > 0 && q.eventIdx() {
		// The store of the available index reaches memory only after
		// the load of avail_event, and after the device moved it.
		q.reorderKicks--
		ev := ring.Load16(q.used, 4+8*int(q.size))
		waitChange16(q.used, 4+8*int(q.size), ev, reorderWindow)
		ring.Store16(q.avail, 2, old+1)
		kick = ring.NeedEvent(ev, old+1, old)
	} else if ring.Store16(q.avail, 2, old+1); q.eventIdx() {
		ring.FullFence()
		kick = ring.NeedEvent(ring.Load16(q.used, 4+8*int(q.size)), old+1, old)
	} else {
		ring.FullFence()
		kick = ring.Load16(q.used, 0)&virtqueue.UsedFlagNoNotify == 0
	}
	if kick && q.dropKicks > 0 {
		q.dropKicks--
		kick = false
	}
	q.mu.Unlock()
	if kick {
		if _, err := q.kick.Write(q.kickVal[:]); err != nil {
			return fmt.Errorf("kick: %w", err)
		}
	}
	return nil
}

func (q *queue) putDesc(i uint16, d Desc) {
	PutDesc(q.desc, int(i), d)
}
