package virtqueue

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// RegionSpec describes one region of guest RAM as the frontend announces it
// (SET_MEM_TABLE, ADD_MEM_REG): Size bytes at guest-physical address
// GuestPhys, mapped in the frontend's address space at UserAddr, backed by
// Fd at MmapOffset.
type RegionSpec struct {
	GuestPhys  uint64
	Size       uint64
	UserAddr   uint64
	MmapOffset uint64
	Fd         int
}

// ErrOutOfRange reports an address range not fully inside guest memory.
var ErrOutOfRange = errors.New("address range outside guest memory")

// region is one mmapped piece of guest RAM. refs counts the snapshots that
// contain it plus any other holder (rings); the mapping goes away when the
// count reaches zero.
type region struct {
	gpa, size, uva uint64
	data           []byte // exactly size bytes
	mapping        []byte // what munmap gets; nil for test memory
	refs           atomic.Int64
}

func (r *region) release() {
	if r.refs.Add(-1) == 0 && r.mapping != nil {
		// Nothing can hold a slice into it any more.
		_ = unix.Munmap(r.mapping)
		r.mapping = nil
	}
}

// Snapshot is an immutable view of the guest memory map. Slices obtained
// through it stay valid until Release: regions removed from the map meanwhile
// are unmapped only when the last snapshot containing them is released.
type Snapshot struct {
	refs    atomic.Int64 // 1 while current, +1 per Acquire
	regions []*region    // sorted by gpa, non-overlapping
}

// Release gives up a reference taken by GuestMemory.Acquire.
func (s *Snapshot) Release() {
	if s.refs.Add(-1) == 0 {
		for _, r := range s.regions {
			r.release()
		}
	}
}

// find returns the region containing gpa, or nil.
func (s *Snapshot) find(gpa uint64) *region {
	rs := s.regions
	if len(rs) == 1 { // the common case
		if r := rs[0]; gpa-r.gpa < r.size && gpa >= r.gpa {
			return r
		}
		return nil
	}
	i := sort.Search(len(rs), func(i int) bool { return rs[i].gpa+rs[i].size > gpa })
	if i < len(rs) && gpa >= rs[i].gpa {
		return rs[i]
	}
	return nil
}

// Slice returns the n bytes at guest-physical address gpa as one host slice.
// The range must lie in a single region.
func (s *Snapshot) Slice(gpa, n uint64) ([]byte, error) {
	r := s.find(gpa)
	if r == nil {
		return nil, fmt.Errorf("gpa %#x: %w", gpa, ErrOutOfRange)
	}
	off := gpa - r.gpa
	if n > r.size-off {
		return nil, fmt.Errorf("gpa %#x len %#x crosses the end of its region: %w", gpa, n, ErrOutOfRange)
	}
	return r.data[off : off+n : off+n], nil
}

// AppendSlices appends host slices covering the n bytes at gpa to dst. A range
// that spans adjacent regions (contiguous in guest-physical space) becomes
// one slice per region. Zero-length ranges append nothing. Overflow of
// gpa+n and any gap are errors.
func (s *Snapshot) AppendSlices(dst [][]byte, gpa, n uint64) ([][]byte, error) {
	if gpa+n < gpa {
		return dst, fmt.Errorf("gpa %#x len %#x overflows: %w", gpa, n, ErrOutOfRange)
	}
	for n > 0 {
		r := s.find(gpa)
		if r == nil {
			return dst, fmt.Errorf("gpa %#x: %w", gpa, ErrOutOfRange)
		}
		off := gpa - r.gpa
		m := min(r.size-off, n)
		dst = append(dst, r.data[off:off+m:off+m])
		gpa += m
		n -= m
	}
	return dst, nil
}

// userRegion returns the region containing frontend user address uva and
// the offset in it.
func (s *Snapshot) userRegion(uva uint64) (*region, uint64) {
	for _, r := range s.regions {
		if uva >= r.uva && uva-r.uva < r.size {
			return r, uva - r.uva
		}
	}
	return nil, 0
}

// UserSlice translates n bytes at frontend user address uva (the addresses
// SET_VRING_ADDR carries) into one host slice inside a single region.
func (s *Snapshot) UserSlice(uva, n uint64) ([]byte, error) {
	r, off := s.userRegion(uva)
	if r == nil {
		return nil, fmt.Errorf("user address %#x: %w", uva, ErrOutOfRange)
	}
	if n > r.size-off {
		return nil, fmt.Errorf("user address %#x len %#x crosses the end of its region: %w", uva, n, ErrOutOfRange)
	}
	return r.data[off : off+n : off+n], nil
}

// Pin is a reference on the regions behind some slices, independent of any
// snapshot: rings hold one for as long as they run, so that replacing or
// removing memory never unmaps a ring under its queue.
type Pin struct {
	regions []*region
}

// PinUser translates like UserSlice and also returns a Pin on the region.
func (s *Snapshot) PinUser(uva, n uint64) ([]byte, *Pin, error) {
	b, err := s.UserSlice(uva, n)
	if err != nil {
		return nil, nil, err
	}
	r, _ := s.userRegion(uva)
	r.refs.Add(1) // safe: s holds a reference, so r is alive
	return b, &Pin{regions: []*region{r}}, nil
}

// Release drops the pin. It is safe on a nil Pin.
func (p *Pin) Release() {
	if p == nil {
		return
	}
	for _, r := range p.regions {
		r.release()
	}
	p.regions = nil
}

// GuestMemory is the guest RAM shared by the frontend: a set of mmapped
// regions. Readers take a Snapshot (one atomic increment); writers (the
// vhost-user control loop) build a new snapshot and swap it in atomically.
type GuestMemory struct {
	mu  sync.Mutex // serialises writers
	cur atomic.Pointer[Snapshot]
}

// NewGuestMemory returns an empty guest memory.
func NewGuestMemory() *GuestMemory {
	m := &GuestMemory{}
	s := &Snapshot{}
	s.refs.Store(1)
	m.cur.Store(s)
	return m
}

// Acquire returns the current snapshot with a reference the caller must
// Release.
func (m *GuestMemory) Acquire() *Snapshot {
	for {
		s := m.cur.Load()
		r := s.refs.Load()
		// A snapshot at zero references has already been replaced (the
		// current one always holds its own reference); load again.
		if r > 0 && s.refs.CompareAndSwap(r, r+1) {
			return s
		}
	}
}

// NumRegions returns the number of regions in the current map.
func (m *GuestMemory) NumRegions() int {
	s := m.Acquire()
	defer s.Release()
	return len(s.regions)
}

func mapRegion(spec RegionSpec) (*region, error) {
	if spec.Size == 0 {
		return nil, errors.New("empty memory region")
	}
	if spec.GuestPhys+spec.Size < spec.GuestPhys || spec.UserAddr+spec.Size < spec.UserAddr ||
		spec.MmapOffset+spec.Size < spec.MmapOffset {
		return nil, fmt.Errorf("memory region gpa %#x size %#x overflows", spec.GuestPhys, spec.Size)
	}
	// Touching a MAP_SHARED page past the end of its file raises SIGBUS,
	// which would kill the daemon: a file must cover the region.
	var st unix.Stat_t
	if err := unix.Fstat(spec.Fd, &st); err != nil {
		return nil, fmt.Errorf("memory region fd: %w", err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG && uint64(st.Size) < spec.MmapOffset+spec.Size {
		return nil, fmt.Errorf("memory region gpa %#x size %#x offset %#x: backing file has only %d bytes", spec.GuestPhys, spec.Size, spec.MmapOffset, st.Size)
	}
	page := uint64(unix.Getpagesize())
	start := spec.MmapOffset &^ (page - 1)
	delta := spec.MmapOffset - start
	length := spec.Size + delta
	if length < spec.Size || length > uint64(^uint(0)>>1) || start > 1<<62 {
		return nil, fmt.Errorf("memory region size %#x too large", spec.Size)
	}
	mapping, err := unix.Mmap(spec.Fd, int64(start), int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap memory region gpa %#x size %#x offset %#x: %w", spec.GuestPhys, spec.Size, spec.MmapOffset, err)
	}
	r := &region{gpa: spec.GuestPhys, size: spec.Size, uva: spec.UserAddr, mapping: mapping, data: mapping[delta : delta+spec.Size : delta+spec.Size]}
	return r, nil
}

func overlaps(a, b *region) bool {
	return a.gpa < b.gpa+b.size && b.gpa < a.gpa+a.size
}

// install swaps in a snapshot of regions; each region arrives with one
// reference, which the new snapshot takes over.
func (m *GuestMemory) install(regions []*region) {
	sort.Slice(regions, func(i, j int) bool { return regions[i].gpa < regions[j].gpa })
	s := &Snapshot{regions: regions}
	s.refs.Store(1)
	old := m.cur.Swap(s)
	old.Release()
}

// SetTable replaces the whole map (SET_MEM_TABLE). It maps every region
// before changing anything; on error the old map stays. The fds are not
// closed.
func (m *GuestMemory) SetTable(specs []RegionSpec) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var regions []*region
	fail := func(err error) error {
		for _, r := range regions {
			r.refs.Store(1)
			r.release()
		}
		return err
	}
	for _, sp := range specs {
		r, err := mapRegion(sp)
		if err != nil {
			return fail(err)
		}
		for _, o := range regions {
			if overlaps(o, r) {
				regions = append(regions, r)
				return fail(fmt.Errorf("memory region gpa %#x size %#x overlaps another", sp.GuestPhys, sp.Size))
			}
		}
		regions = append(regions, r)
	}
	for _, r := range regions {
		r.refs.Store(1)
	}
	m.install(regions)
	return nil
}

// Add maps one more region (ADD_MEM_REG). The fd is not closed.
func (m *GuestMemory) Add(spec RegionSpec) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := mapRegion(spec)
	if err != nil {
		return err
	}
	r.refs.Store(1)
	cur := m.cur.Load()
	regions := make([]*region, 0, len(cur.regions)+1)
	for _, o := range cur.regions {
		if overlaps(o, r) {
			r.release()
			return fmt.Errorf("memory region gpa %#x size %#x overlaps another", spec.GuestPhys, spec.Size)
		}
	}
	for _, o := range cur.regions {
		o.refs.Add(1)
		regions = append(regions, o)
	}
	m.install(append(regions, r))
	return nil
}

// Remove drops the region with the given guest-physical address and size
// (REM_MEM_REG). Its mapping lives on until no snapshot or pin uses it.
func (m *GuestMemory) Remove(gpa, size uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.cur.Load()
	found := false
	regions := make([]*region, 0, len(cur.regions))
	for _, o := range cur.regions {
		if o.gpa == gpa && o.size == size && !found {
			found = true
			continue
		}
		o.refs.Add(1)
		regions = append(regions, o)
	}
	if !found {
		for _, o := range regions {
			o.release()
		}
		return fmt.Errorf("no memory region at gpa %#x size %#x", gpa, size)
	}
	m.install(regions)
	return nil
}

// Close empties the map. Mappings still in use are unmapped when released.
func (m *GuestMemory) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.install(nil)
}

// NewMemoryFromBytes returns guest memory backed by ordinary Go byte slices,
// one region per slice, laid out at the given guest-physical addresses with
// user addresses equal to them. It exists for tests and fuzzing of code that
// walks guest memory without a frontend.
func NewMemoryFromBytes(gpas []uint64, bufs [][]byte) (*GuestMemory, error) {
	if len(gpas) != len(bufs) {
		return nil, errors.New("NewMemoryFromBytes: gpas and bufs differ in length")
	}
	m := NewGuestMemory()
	var regions []*region
	for i, b := range bufs {
		r := &region{gpa: gpas[i], size: uint64(len(b)), uva: gpas[i], data: b}
		if r.size == 0 || r.gpa+r.size < r.gpa {
			return nil, errors.New("NewMemoryFromBytes: bad region")
		}
		for _, o := range regions {
			if overlaps(o, r) {
				return nil, errors.New("NewMemoryFromBytes: overlapping regions")
			}
		}
		r.refs.Store(1)
		regions = append(regions, r)
	}
	m.install(regions)
	return m, nil
}
