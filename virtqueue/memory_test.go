package virtqueue

import (
	"errors"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"golang.org/x/sys/unix"
)

func memfd(t *testing.T, size int) int {
	t.Helper()
	fd, err := unix.MemfdCreate("guest", unix.MFD_CLOEXEC)
	if err != nil {
		testenv.Skipf(t, "memfd_create: %v", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestGuestMemoryTranslate(t *testing.T) {
	page := uint64(unix.Getpagesize())
	fd := memfd(t, int(4*page))
	// Write a marker through a separate mapping of the same file.
	view, err := unix.Mmap(fd, 0, int(4*page), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(view)
	view[page+100] = 0xab    // region A offset 100 (mmap offset = 1 page)
	view[3*page+5+7] = 0xcd  // region B offset 7 (unaligned mmap offset 3 pages + 5)
	view[page+page-1] = 0x11 // last byte of A

	m := NewGuestMemory()
	defer m.Close()
	a := RegionSpec{GuestPhys: 0x10000, Size: page, UserAddr: 0x7f0000000000, MmapOffset: page, Fd: fd}
	b := RegionSpec{GuestPhys: 0x10000 + page, Size: page - 5, UserAddr: 0x7f1000000000, MmapOffset: 3*page + 5, Fd: fd}
	if err := m.SetTable([]RegionSpec{a, b}); err != nil {
		t.Fatal(err)
	}
	s := m.Acquire()
	defer s.Release()

	got, err := s.Slice(0x10000+100, 1)
	if err != nil || got[0] != 0xab {
		t.Fatalf("Slice gpa: %v %v", got, err)
	}
	got, err = s.UserSlice(0x7f1000000000+7, 1)
	if err != nil || got[0] != 0xcd {
		t.Fatalf("UserSlice: %v %v", got, err)
	}
	// Straddling A and B: two slices, or an error from Slice.
	sl, err := s.AppendSlices(nil, 0x10000+page-1, 9)
	if err != nil || len(sl) != 2 || len(sl[0]) != 1 || len(sl[1]) != 8 || sl[0][0] != 0x11 || sl[1][7] != 0xcd {
		t.Fatalf("AppendSlices across regions: %v %v", sl, err)
	}
	if _, err := s.Slice(0x10000+page-1, 2); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("Slice across regions: %v", err)
	}
	for _, tc := range []struct{ gpa, n uint64 }{
		{0, 1}, {0x10000 + 2*page, 1}, {0x10000 + page + page - 5, 1}, {^uint64(0) - 2, 8}, {0x10000, ^uint64(0)},
	} {
		if _, err := s.AppendSlices(nil, tc.gpa, tc.n); err == nil {
			t.Errorf("AppendSlices(%#x, %#x) accepted", tc.gpa, tc.n)
		}
	}
	if _, err := s.UserSlice(0x7f0000000000+page-1, 2); err == nil {
		t.Error("UserSlice past the region accepted")
	}
	if b, err := s.AppendSlices(nil, 0x10000, 0); err != nil || len(b) != 0 {
		t.Errorf("zero-length range: %v %v", b, err)
	}
}

func TestGuestMemoryAddRemoveDefersUnmap(t *testing.T) {
	page := uint64(unix.Getpagesize())
	fd := memfd(t, int(2*page))
	m := NewGuestMemory()
	defer m.Close()
	if err := m.Add(RegionSpec{GuestPhys: 0, Size: page, UserAddr: 0x1000000, Fd: fd}); err != nil {
		t.Fatal(err)
	}
	if err := m.Add(RegionSpec{GuestPhys: page / 2, Size: page, UserAddr: 0x2000000, Fd: fd}); err == nil {
		t.Fatal("overlapping region accepted")
	}
	if err := m.Add(RegionSpec{GuestPhys: 4 * page, Size: page, UserAddr: 0x2000000, MmapOffset: page, Fd: fd}); err != nil {
		t.Fatal(err)
	}
	if m.NumRegions() != 2 {
		t.Fatalf("%d regions", m.NumRegions())
	}
	held := m.Acquire()
	buf, err := held.Slice(4*page, page)
	if err != nil {
		t.Fatal(err)
	}
	r := held.find(4 * page)
	if err := m.Remove(4*page, page); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(4*page, page); err == nil {
		t.Fatal("removing twice succeeded")
	}
	now := m.Acquire()
	if _, err := now.Slice(4*page, 1); err == nil {
		t.Error("removed region still translates")
	}
	now.Release()
	buf[0] = 1 // still mapped: the held snapshot keeps it
	if r.mapping == nil {
		t.Fatal("region unmapped while a snapshot holds it")
	}
	held.Release()
	if r.mapping != nil {
		t.Fatal("region still mapped after its last snapshot went")
	}
}

func TestSetTableFailureKeepsOldMap(t *testing.T) {
	page := uint64(unix.Getpagesize())
	fd := memfd(t, int(page))
	m := NewGuestMemory()
	defer m.Close()
	if err := m.SetTable([]RegionSpec{{GuestPhys: 0, Size: page, Fd: fd}}); err != nil {
		t.Fatal(err)
	}
	bad := []RegionSpec{{GuestPhys: 0, Size: page, Fd: fd}, {GuestPhys: 0, Size: page, Fd: fd}}
	if err := m.SetTable(bad); err == nil {
		t.Fatal("overlapping table accepted")
	}
	if err := m.SetTable([]RegionSpec{{GuestPhys: 0, Size: page, Fd: -1}}); err == nil {
		t.Fatal("bad fd accepted")
	}
	if err := m.SetTable([]RegionSpec{{GuestPhys: 0, Size: 2 * page, Fd: fd}}); err == nil {
		t.Fatal("region larger than its file accepted")
	}
	if err := m.Add(RegionSpec{GuestPhys: 1 << 20, Size: page, MmapOffset: page, Fd: fd}); err == nil {
		t.Fatal("region past the end of its file accepted")
	}
	if m.NumRegions() != 1 {
		t.Fatal("old map lost")
	}
}
