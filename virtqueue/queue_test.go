package virtqueue

import (
	"encoding/binary"
	"errors"
	"testing"
	"unsafe"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/ring"
)

// Layout used by the in-package tests and the fuzz target: two adjacent
// 4 KiB regions at gpa 0x1000 and 0x2000; an 8-entry queue at the start of
// the first one.
const (
	tRegion   = 0x1000
	tSize     = 8
	tDesc     = 0x1000
	tAvail    = 0x1080
	tUsed     = 0x10a0
	tDataBase = 0x1200
)

type testRing struct {
	mem  *GuestMemory
	bufs [][]byte
	q    *Queue
}

func newTestRing(t testing.TB, eventIdx bool) *testRing {
	bufs := [][]byte{make([]byte, tRegion), make([]byte, tRegion)}
	m, err := NewMemoryFromBytes([]uint64{0x1000, 0x2000}, bufs)
	if err != nil {
		t.Fatal(err)
	}
	s := m.Acquire()
	defer s.Release()
	q, err := NewQueue(s, Config{Size: tSize, Desc: tDesc, Avail: tAvail, Used: tUsed, EventIdx: eventIdx})
	if err != nil {
		t.Fatal(err)
	}
	return &testRing{mem: m, bufs: bufs, q: q}
}

// at returns guest memory at gpa (test layout only).
func (r *testRing) at(gpa uint64) []byte {
	if gpa >= 0x2000 {
		return r.bufs[1][gpa-0x2000:]
	}
	return r.bufs[0][gpa-0x1000:]
}

func (r *testRing) setDesc(i int, addr uint64, n uint32, flags, next uint16) {
	putDesc(r.at(tDesc), i, addr, n, flags, next)
}

func putDesc(table []byte, i int, addr uint64, n uint32, flags, next uint16) {
	d := table[i*16:]
	binary.LittleEndian.PutUint64(d, addr)
	binary.LittleEndian.PutUint32(d[8:], n)
	binary.LittleEndian.PutUint16(d[12:], flags)
	binary.LittleEndian.PutUint16(d[14:], next)
}

// publish appends heads to the available ring.
func (r *testRing) publish(heads ...uint16) {
	a := r.at(tAvail)
	idx := binary.LittleEndian.Uint16(a[2:])
	for _, h := range heads {
		binary.LittleEndian.PutUint16(a[4+2*int(idx%tSize):], h)
		idx++
	}
	binary.LittleEndian.PutUint16(a[2:], idx)
}

func TestPopChains(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(r *testRing)
		wantErr  bool
		wantR    []int
		wantW    []int
		returnOK bool
	}{
		{"single readable", func(r *testRing) { r.setDesc(0, tDataBase, 10, 0, 0) }, false, []int{10}, nil, true},
		{"readable then writable", func(r *testRing) {
			r.setDesc(0, tDataBase, 10, DescFlagNext, 1)
			r.setDesc(1, tDataBase+16, 20, DescFlagWrite, 0)
		}, false, []int{10}, []int{20}, true},
		{"straddles two regions", func(r *testRing) { r.setDesc(0, 0x1ff0, 0x20, DescFlagWrite, 0) }, false, nil, []int{0x10, 0x10}, true},
		{"adjacent buffers merge", func(r *testRing) {
			r.setDesc(0, tDataBase, 8, DescFlagNext, 1)
			r.setDesc(1, tDataBase+8, 8, DescFlagNext, 2)
			r.setDesc(2, tDataBase+16, 4, DescFlagNext|DescFlagWrite, 3)
			r.setDesc(3, tDataBase+20, 4, DescFlagNext|DescFlagWrite, 4)
			r.setDesc(4, tDataBase+40, 4, DescFlagWrite, 0)
		}, false, []int{16}, []int{8, 4}, true},
		{"zero-length buffer between adjacent ones", func(r *testRing) {
			r.setDesc(0, tDataBase, 8, DescFlagNext|DescFlagWrite, 1)
			r.setDesc(1, 0x9000, 0, DescFlagNext|DescFlagWrite, 2)
			r.setDesc(2, tDataBase+8, 8, DescFlagWrite, 0)
		}, false, nil, []int{16}, true},
		{"same buffer twice is not merged", func(r *testRing) {
			r.setDesc(0, tDataBase, 8, DescFlagNext|DescFlagWrite, 1)
			r.setDesc(1, tDataBase, 8, DescFlagWrite, 0)
		}, false, nil, []int{8, 8}, true},
		{"adjacent across regions not merged", func(r *testRing) {
			r.setDesc(0, 0x1ff0, 0x10, DescFlagNext|DescFlagWrite, 1)
			r.setDesc(1, 0x2000, 0x10, DescFlagWrite, 0)
		}, false, nil, []int{0x10, 0x10}, true},
		{"outside memory", func(r *testRing) { r.setDesc(0, 0x9000, 1, 0, 0) }, true, nil, nil, true},
		{"past the end of memory", func(r *testRing) { r.setDesc(0, 0x2ff0, 0x20, 0, 0) }, true, nil, nil, true},
		{"addr+len overflows", func(r *testRing) { r.setDesc(0, ^uint64(0)-4, 16, 0, 0) }, true, nil, nil, true},
		{"loop", func(r *testRing) {
			r.setDesc(0, tDataBase, 1, DescFlagNext, 1)
			r.setDesc(1, tDataBase, 1, DescFlagNext, 0)
		}, true, nil, nil, true},
		{"next out of range", func(r *testRing) { r.setDesc(0, tDataBase, 1, DescFlagNext, 99) }, true, nil, nil, true},
		{"readable after writable", func(r *testRing) {
			r.setDesc(0, tDataBase, 1, DescFlagNext|DescFlagWrite, 1)
			r.setDesc(1, tDataBase, 1, 0, 0)
		}, true, nil, nil, true},
		{"indirect", func(r *testRing) {
			tab := r.at(0x1400)
			putDesc(tab, 0, tDataBase, 3, DescFlagNext, 1)
			putDesc(tab, 1, tDataBase+8, 5, DescFlagWrite, 0)
			r.setDesc(0, 0x1400, 32, DescFlagIndirect, 0)
		}, false, []int{3}, []int{5}, true},
		{"indirect with bad length", func(r *testRing) { r.setDesc(0, 0x1400, 17, DescFlagIndirect, 0) }, true, nil, nil, true},
		{"indirect too long", func(r *testRing) { r.setDesc(0, 0x1400, 16*(tSize+1), DescFlagIndirect, 0) }, true, nil, nil, true},
		{"indirect table outside memory", func(r *testRing) { r.setDesc(0, 0x8000, 32, DescFlagIndirect, 0) }, true, nil, nil, true},
		{"nested indirect", func(r *testRing) {
			putDesc(r.at(0x1400), 0, 0x1400, 16, DescFlagIndirect, 0)
			r.setDesc(0, 0x1400, 16, DescFlagIndirect, 0)
		}, true, nil, nil, true},
		{"indirect loop", func(r *testRing) {
			putDesc(r.at(0x1400), 0, tDataBase, 1, DescFlagNext, 1)
			putDesc(r.at(0x1400), 1, tDataBase, 1, DescFlagNext, 0)
			r.setDesc(0, 0x1400, 32, DescFlagIndirect, 0)
		}, true, nil, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRing(t, false)
			tc.setup(r)
			r.publish(0)
			s := r.mem.Acquire()
			defer s.Release()
			var c Chain
			ok, err := r.q.Pop(s, &c)
			if !ok {
				t.Fatalf("Pop: nothing available (err %v)", err)
			}
			if tc.wantErr {
				var ce *ChainError
				if !errors.As(err, &ce) || ce.Returnable != tc.returnOK || ce.Head != 0 {
					t.Fatalf("want ChainError for head 0, got %v", err)
				}
				if len(c.Readable)+len(c.Writable) != 0 {
					t.Fatalf("malformed chain left buffers: %v %v", c.Readable, c.Writable)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := lens(c.Readable); !equalInts(got, tc.wantR) {
				t.Errorf("readable lens %v, want %v", got, tc.wantR)
			}
			if got := lens(c.Writable); !equalInts(got, tc.wantW) {
				t.Errorf("writable lens %v, want %v", got, tc.wantW)
			}
		})
	}
}

func lens(bs [][]byte) []int {
	var out []int
	for _, b := range bs {
		out = append(out, len(b))
	}
	return out
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestHeadOutOfRangeAndAvailJump(t *testing.T) {
	r := newTestRing(t, false)
	r.publish(tSize + 3)
	s := r.mem.Acquire()
	defer s.Release()
	var c Chain
	ok, err := r.q.Pop(s, &c)
	var ce *ChainError
	if !ok || !errors.As(err, &ce) || ce.Returnable {
		t.Fatalf("head out of range: ok %v err %v", ok, err)
	}
	binary.LittleEndian.PutUint16(r.at(tAvail)[2:], 1+tSize+1)
	if ok, err := r.q.Pop(s, &c); ok || !errors.Is(err, ErrAvailIndex) {
		t.Fatalf("avail jump: ok %v err %v", ok, err)
	}
}

func TestPushAndNotify(t *testing.T) {
	for _, eventIdx := range []bool{false, true} {
		r := newTestRing(t, eventIdx)
		used := r.at(tUsed)
		avail := r.at(tAvail)
		if eventIdx {
			// used_event = 1: signal when the used index moves past 1.
			binary.LittleEndian.PutUint16(avail[4+2*tSize:], 1)
			if r.q.Push(0, 5) {
				t.Error("event idx: signalled at used 0→1 with used_event 1")
			}
			if !r.q.Push(1, 6) {
				t.Error("event idx: no signal at used 1→2 with used_event 1")
			}
		} else {
			binary.LittleEndian.PutUint16(avail[0:], AvailFlagNoInterrupt)
			if r.q.Push(0, 5) {
				t.Error("NO_INTERRUPT ignored")
			}
			binary.LittleEndian.PutUint16(avail[0:], 0)
			if !r.q.Push(1, 6) {
				t.Error("no signal without NO_INTERRUPT")
			}
		}
		if idx := binary.LittleEndian.Uint16(used[2:]); idx != 2 {
			t.Errorf("used idx %d, want 2", idx)
		}
		if id, n := binary.LittleEndian.Uint32(used[12:]), binary.LittleEndian.Uint32(used[16:]); id != 1 || n != 6 {
			t.Errorf("used elem 1 = (%d, %d), want (1, 6)", id, n)
		}
		// Kick suppression.
		r.q.DisableNotify()
		r.publish(0)
		if !r.q.EnableNotify() {
			t.Error("EnableNotify missed a pending chain")
		}
		if eventIdx {
			if ev := binary.LittleEndian.Uint16(used[4+8*tSize:]); ev != 0 {
				t.Errorf("avail_event %d, want 0", ev)
			}
		} else if f := binary.LittleEndian.Uint16(used[0:]); f != 0 {
			t.Errorf("used flags %d after EnableNotify", f)
		}
	}
}

func TestNeedEvent(t *testing.T) {
	tests := []struct {
		ev, new, old uint16
		want         bool
	}{{0, 1, 0, true}, {1, 1, 0, false}, {5, 10, 3, true}, {10, 10, 3, false}, {0xffff, 0, 0xfffe, true}}
	for _, tc := range tests {
		if got := ring.NeedEvent(tc.ev, tc.new, tc.old); got != tc.want {
			t.Errorf("ring.NeedEvent(%d,%d,%d) = %v", tc.ev, tc.new, tc.old, got)
		}
	}
}

func TestNewQueueRejects(t *testing.T) {
	m, _ := NewMemoryFromBytes([]uint64{0x1000}, [][]byte{make([]byte, 4096)})
	s := m.Acquire()
	defer s.Release()
	for _, cfg := range []Config{
		{Size: 0, Desc: 0x1000, Avail: 0x1100, Used: 0x1200},
		{Size: 3, Desc: 0x1000, Avail: 0x1100, Used: 0x1200},
		{Size: 8, Desc: 0x1001, Avail: 0x1100, Used: 0x1200},
		{Size: 8, Desc: 0x1000, Avail: 0x1100, Used: 0x1202},
		{Size: 1024, Desc: 0x1000, Avail: 0x1100, Used: 0x1200}, // rings run past the region
		{Size: 8, Desc: 0x9000, Avail: 0x1100, Used: 0x1200},
	} {
		if q, err := NewQueue(s, cfg); err == nil {
			q.Release()
			t.Errorf("NewQueue(%+v) accepted", cfg)
		}
	}
}

// FuzzWalkChain pops chains out of a fuzzer-written 8 KiB of guest memory
// (descriptor table, available ring, indirect tables) and checks that Pop
// never panics and only ever returns slices inside guest memory.
func FuzzWalkChain(f *testing.F) {
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := newTestRing(t, len(data)%2 == 0)
		n := copy(r.bufs[0], data)
		copy(r.bufs[1], data[n:])
		s := r.mem.Acquire()
		defer s.Release()
		var c Chain
		for i := 0; i < 2*tSize; i++ {
			ok, err := r.q.Pop(s, &c)
			if !ok {
				break
			}
			if err != nil {
				var ce *ChainError
				if !errors.As(err, &ce) {
					t.Fatalf("Pop: unexpected error type %T", err)
				}
				if len(c.Readable)+len(c.Writable) != 0 {
					t.Fatal("malformed chain left buffers")
				}
				if ce.Returnable {
					r.q.Push(ce.Head, 0)
				}
				continue
			}
			if c.ReadableLen()+c.WritableLen() > 2*tRegion*tSize {
				t.Fatalf("chain of %d bytes from %d KiB", c.ReadableLen()+c.WritableLen(), 2*tRegion/1024)
			}
			for _, b := range append(append([][]byte{}, c.Readable...), c.Writable...) {
				if !inside(b, r.bufs) {
					t.Fatal("buffer outside guest memory")
				}
			}
			// Merging neither drops, duplicates nor reorders bytes, and
			// merges every pair it may.
			rd, wr := refChain(t, s, c.Head)
			if !sameSlices(c.Readable, coalesce(rd, r.bufs)) || !sameSlices(c.Writable, coalesce(wr, r.bufs)) {
				t.Fatalf("chain %d: buffers differ from one translation per descriptor", c.Head)
			}
			r.q.Push(c.Head, 0)
		}
	})
}

func inside(b []byte, regions [][]byte) bool {
	return len(b) == 0 || insideRange(uintptr(unsafe.Pointer(&b[0])), len(b), regions)
}

// insideRange reports whether the n bytes at p lie inside one region.
func insideRange(p uintptr, n int, regions [][]byte) bool {
	for _, r := range regions {
		lo := uintptr(unsafe.Pointer(&r[0]))
		if p >= lo && p+uintptr(n) <= lo+uintptr(len(r)) {
			return true
		}
	}
	return false
}

// refChain walks the chain at head of the test ring naively, one
// AppendSlices per descriptor and no merging across descriptors, for a
// chain Pop accepted.
func refChain(t *testing.T, s *Snapshot, head uint16) (rd, wr [][]byte) {
	table, err := s.Slice(tDesc, DescSize*tSize)
	if err != nil {
		t.Fatal(err)
	}
	idx := int(head)
	for steps := 0; steps <= 2*tSize; steps++ {
		d := table[DescSize*idx:]
		addr, n := binary.LittleEndian.Uint64(d), binary.LittleEndian.Uint32(d[8:])
		flags, next := binary.LittleEndian.Uint16(d[12:]), binary.LittleEndian.Uint16(d[14:])
		switch {
		case flags&DescFlagIndirect != 0:
			if table, err = s.Slice(addr, uint64(n)); err != nil {
				t.Fatal(err)
			}
			idx = 0
			continue
		case flags&DescFlagWrite != 0:
			wr, err = s.AppendSlices(wr, addr, uint64(n))
		default:
			rd, err = s.AppendSlices(rd, addr, uint64(n))
		}
		if err != nil {
			t.Fatal(err)
		}
		if flags&DescFlagNext == 0 {
			return rd, wr
		}
		idx = int(next)
	}
	t.Fatal("reference walk did not end")
	return nil, nil
}

// coalesce joins consecutive slices that continue one another inside one
// region.
func coalesce(bs [][]byte, regions [][]byte) [][]byte {
	var out [][]byte
	for _, b := range bs {
		if k := len(out) - 1; k >= 0 && len(out[k]) > 0 && len(b) > 0 {
			p := uintptr(unsafe.Pointer(&out[k][0]))
			if p+uintptr(len(out[k])) == uintptr(unsafe.Pointer(&b[0])) && insideRange(p, len(out[k])+len(b), regions) {
				out[k] = unsafe.Slice(&out[k][0], len(out[k])+len(b))
				continue
			}
		}
		out = append(out, b)
	}
	return out
}

// sameSlices reports whether a and b are the same memory, slice by slice.
func sameSlices(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) || len(a[i]) > 0 && &a[i][0] != &b[i][0] {
			return false
		}
	}
	return true
}
