package testdriver

import (
	"fmt"
	"sort"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// memRegion is one memfd of guest RAM, mapped into this process the way
// QEMU maps its RAM: its user address is our own mapping's address.
type memRegion struct {
	gpa  uint64
	data []byte
	fd   int
}

func (r *memRegion) uva() uint64 { return uint64(uintptr(unsafe.Pointer(&r.data[0]))) }

// guestRAM is the guest's memory: regions laid out back to back in
// guest-physical space starting at 0, so heap buffers can straddle two
// regions (the daemon must split them).
type guestRAM struct {
	regions []*memRegion
	end     uint64
}

func newGuestRAM(sizes []uint64) (*guestRAM, error) {
	ram := &guestRAM{}
	page := uint64(unix.Getpagesize())
	for i, size := range sizes {
		size = (size + page - 1) &^ (page - 1)
		fd, err := unix.MemfdCreate(fmt.Sprintf("guest-ram-%d", i), unix.MFD_CLOEXEC)
		if err != nil {
			ram.close()
			return nil, fmt.Errorf("memfd_create: %w", err)
		}
		if err := unix.Ftruncate(fd, int64(size)); err != nil {
			unix.Close(fd)
			ram.close()
			return nil, fmt.Errorf("ftruncate guest RAM: %w", err)
		}
		data, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			unix.Close(fd)
			ram.close()
			return nil, fmt.Errorf("mmap guest RAM: %w", err)
		}
		ram.regions = append(ram.regions, &memRegion{gpa: ram.end, data: data, fd: fd})
		ram.end += size
	}
	return ram, nil
}

func (m *guestRAM) close() {
	for _, r := range m.regions {
		unix.Munmap(r.data)
		unix.Close(r.fd)
	}
	m.regions = nil
}

// slices returns the host slices behind [gpa, gpa+n), which must be RAM.
func (m *guestRAM) slices(gpa, n uint64) [][]byte {
	var out [][]byte
	for n > 0 {
		var r *memRegion
		for _, c := range m.regions {
			if gpa >= c.gpa && gpa-c.gpa < uint64(len(c.data)) {
				r = c
				break
			}
		}
		if r == nil {
			panic(fmt.Sprintf("testdriver: gpa %#x is not guest RAM", gpa))
		}
		off := gpa - r.gpa
		k := uint64(len(r.data)) - off
		if k > n {
			k = n
		}
		out = append(out, r.data[off:off+k])
		gpa += k
		n -= k
	}
	return out
}

func (m *guestRAM) write(gpa uint64, b []byte) {
	for _, s := range m.slices(gpa, uint64(len(b))) {
		b = b[copy(s, b):]
	}
}

func (m *guestRAM) read(dst []byte, gpa uint64) {
	for _, s := range m.slices(gpa, uint64(len(dst))) {
		dst = dst[copy(dst, s):]
	}
}

// heap is a first-fit allocator over a guest-physical range.
type heap struct {
	mu   sync.Mutex
	free []span // sorted, coalesced
}

type span struct{ start, end uint64 }

const heapAlign = 64

func newHeap(start, end uint64) *heap {
	return &heap{free: []span{{start, end}}}
}

func (h *heap) alloc(n uint64) (uint64, bool) {
	if n == 0 {
		n = 1
	}
	n = (n + heapAlign - 1) &^ (heapAlign - 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range h.free {
		s := &h.free[i]
		if s.end-s.start >= n {
			gpa := s.start
			s.start += n
			if s.start == s.end {
				h.free = append(h.free[:i], h.free[i+1:]...)
			}
			return gpa, true
		}
	}
	return 0, false
}

func (h *heap) release(gpa, n uint64) {
	if n == 0 {
		n = 1
	}
	n = (n + heapAlign - 1) &^ (heapAlign - 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	i := sort.Search(len(h.free), func(i int) bool { return h.free[i].start > gpa })
	h.free = append(h.free, span{})
	copy(h.free[i+1:], h.free[i:])
	h.free[i] = span{gpa, gpa + n}
	// Coalesce with the neighbours.
	if i+1 < len(h.free) && h.free[i].end == h.free[i+1].start {
		h.free[i].end = h.free[i+1].end
		h.free = append(h.free[:i+1], h.free[i+2:]...)
	}
	if i > 0 && h.free[i-1].end == h.free[i].start {
		h.free[i-1].end = h.free[i].end
		h.free = append(h.free[:i], h.free[i+1:]...)
	}
}
