package storage

import (
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/pagecache"
)

func dropPages(t *testing.T, path string, off, n int64) {
	t.Helper()
	if err := pagecache.Drop(path, off, n); err != nil {
		t.Fatal(err)
	}
}

func residentPages(t *testing.T, path string, off, n int64) []bool {
	t.Helper()
	r, err := pagecache.Resident(path, off, n)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestCacheFileNoKernelReadAhead: the cache file is read exactly as asked.
// Two adjacent small reads are what the kernel's read-ahead takes for a
// sequential reader; without POSIX_FADV_RANDOM it reads on past them,
// into chunks that belong to other files.
func TestCacheFileNoKernelReadAhead(t *testing.T) {
	tb := newTestBlob("ra01", 32, 64<<10, 1)
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}}
	dir := t.TempDir()
	m := newManager(t, Options{Type: TypeBlobcache, WorkDir: dir, NoAmplify: true})
	b := openTest(t, m, tb, be, tb)
	readAll(t, b, tb.chunks)
	data := filepath.Join(dir, tb.id+".blob.data")
	dropPages(t, data, 0, 0)
	if n := pagecache.Count(residentPages(t, data, 0, int64(len(tb.data)))); n != 0 {
		t.Fatalf("%d pages resident after the drop", n)
	}
	locs := make([]Location, 1)
	if err := b.Get(t.Context(), tb.chunks[4:5], locs); err != nil || locs[0].Fd < 0 {
		t.Fatalf("get: %v, %+v", err, locs[0])
	}
	buf := make([]byte, 4096)
	for i := range int64(2) {
		if _, err := unix.Pread(locs[0].Fd, buf, locs[0].Off+i*4096); err != nil {
			t.Fatal(err)
		}
	}
	if n := pagecache.Count(residentPages(t, data, 0, int64(len(tb.data)))); n != 2 {
		t.Fatalf("two 4 KiB reads brought %d pages into the page cache, want 2", n)
	}
}

// TestWillRead: the chunks a reader says it will read are read into the
// page cache in the background, only those, only when ready, and only
// when they are not cached already.
func TestWillRead(t *testing.T) {
	const cs = 64 << 10
	tb := newTestBlob("wr01", 16, cs, 2)
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}}
	dir := t.TempDir()
	m := newManager(t, Options{Type: TypeBlobcache, WorkDir: dir, NoAmplify: true})
	b := openTest(t, m, tb, be, tb)
	readAll(t, b, tb.chunks[:12]) // chunks 12-15 stay missing
	waitAhead(m)
	data := filepath.Join(dir, tb.id+".blob.data")
	hints := func() int64 { return m.Metrics().ReadAheadHints }
	resident := func(from, to int) []bool {
		return residentPages(t, data, int64(from)*cs, int64(to-from)*cs)
	}
	waitResident := func(from, to int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			r := resident(from, to)
			if pagecache.Count(r) == len(r) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("chunks %d-%d: %d of %d pages resident 10 s after the hint", from, to-1, pagecache.Count(r), len(r))
			}
		}
	}

	dropPages(t, data, 0, 0)
	// Ready chunks 4-7 with missing 12 among them and 13 after: one
	// hint; 4-7 come in, the chunks around them do not, and nothing is
	// fetched.
	reads := be.reads.Load()
	c := tb.chunks
	b.WillRead([]Chunk{c[4], c[5], c[12], c[6], c[7], c[13]})
	if h := hints(); h != 1 {
		t.Fatalf("hints %d, want 1", h)
	}
	waitResident(4, 8)
	if n := pagecache.Count(resident(0, 4)) + pagecache.Count(resident(8, 16)); n != 0 {
		t.Fatalf("%d pages outside chunks 4-7 resident", n)
	}
	if be.reads.Load() != reads || readyCount(b, tb) != 12 {
		t.Fatal("a hint fetched chunks")
	}
	// Cached: no hint.
	b.WillRead(tb.chunks[4:8])
	if h := hints(); h != 1 {
		t.Fatalf("hints %d after a hint of cached chunks, want 1", h)
	}
	// Only the chunks after the last cached one are hinted: with 7
	// dropped, 4-6 cached and 8 not, a hint of 4-8 reads 7 and 8.
	dropPages(t, data, 7*cs, cs)
	b.WillRead(tb.chunks[4:9])
	if h := hints(); h != 2 {
		t.Fatalf("hints %d, want 2", h)
	}
	waitResident(4, 9)
	// Missing chunks alone: nothing to hint.
	b.WillRead(tb.chunks[12:16])
	if h := hints(); h != 2 {
		t.Fatalf("hints %d after a hint of missing chunks, want 2", h)
	}
}

// TestWillReadCompressedCache: a .blob.raw cache is read and decoded by
// us, not served by file offset: no hints.
func TestWillReadCompressedCache(t *testing.T) {
	tb := newTestBlob("wr02", 8, 64<<10, 3)
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}}
	dir := t.TempDir()
	m := newManager(t, Options{Type: TypeBlobcache, WorkDir: dir, Compressed: true, NoAmplify: true})
	b := openTest(t, m, tb, be, tb)
	readAll(t, b, tb.chunks)
	dropPages(t, filepath.Join(dir, tb.id+".blob.raw"), 0, 0) // else a probe would find them cached
	b.WillRead(tb.chunks)
	if h := m.Metrics().ReadAheadHints; h != 0 {
		t.Fatalf("hints %d, want 0", h)
	}
}
