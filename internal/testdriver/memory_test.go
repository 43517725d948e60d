package testdriver

import (
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
)

func TestHeapAllocFreeCoalesce(t *testing.T) {
	h := newHeap(0x1000, 0x1000+4*heapAlign)
	var got []uint64
	for i := 0; i < 4; i++ {
		gpa, ok := h.alloc(heapAlign)
		if !ok {
			t.Fatalf("alloc %d failed", i)
		}
		got = append(got, gpa)
	}
	if _, ok := h.alloc(1); ok {
		t.Fatal("alloc beyond the heap succeeded")
	}
	// Free out of order; the heap must coalesce back into one span.
	for _, i := range []int{1, 3, 0, 2} {
		h.release(got[i], heapAlign)
	}
	if len(h.free) != 1 || h.free[0] != (span{0x1000, 0x1000 + 4*heapAlign}) {
		t.Fatalf("free list %v", h.free)
	}
	if gpa, ok := h.alloc(4 * heapAlign); !ok || gpa != 0x1000 {
		t.Fatalf("whole-heap alloc: %#x %v", gpa, ok)
	}
}

func TestGuestRAMStraddlingAccess(t *testing.T) {
	ram, err := newGuestRAM([]uint64{4096, 4096})
	if err != nil {
		testenv.Skip(t, err)
	}
	defer ram.close()
	ram.write(4090, []byte("0123456789ab"))
	if s := ram.slices(4090, 12); len(s) != 2 || len(s[0]) != 6 {
		t.Fatalf("slices %v", s)
	}
	got := make([]byte, 12)
	ram.read(got, 4090)
	if string(got) != "0123456789ab" {
		t.Fatalf("read %q", got)
	}
}
