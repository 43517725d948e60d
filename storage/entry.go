package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// entry is one blob's cache state, shared by every handle on the blob.
type entry struct {
	m    *Manager
	desc BlobDesc
	refs int // under m.mu

	// persist is false when the blob has no usable cache file (dummy
	// type, no chunk count, files that could not be opened).
	persist  bool
	raw      bool // .blob.raw: stored bytes at compressed offsets
	dataPath string
	data     *os.File
	fd       int
	// view maps the data file read-only (never touched: no page
	// faults), for asking the kernel which pages are in the page
	// cache (mincore) without reading any; nil for .blob.raw or when
	// mapping failed.
	view []byte
	cmap *chunkMap

	// ready: the chunk's bytes are in the data file (this process wrote
	// them, or the chunk map said so at open). verified: they were checked
	// against the chunk's digest in this process.
	ready    []atomic.Uint64
	verified []atomic.Uint64
	// widened: fetched because a miss was widened to it or it was read
	// ahead, and not asked for since (see Blob.widenBudget).
	widened []atomic.Uint64
	nready  atomic.Int64
	noWrite atomic.Bool // a write failed: stop storing

	mu       sync.Mutex
	inflight map[uint32]*flight

	pmu     sync.Mutex
	pending []uint32 // written, not yet synced and marked

	// fmu serializes flushes and close; writers never wait for it.
	fmu    sync.Mutex
	closed bool
}

// flight is one chunk being fetched; done closes when it is settled.
type flight struct {
	done      chan struct{}
	stored    bool   // in the data file
	data      []byte // its uncompressed bytes when not stored
	err       error
	abandoned bool // err because the fetcher's context ended
}

func newEntry(m *Manager, d BlobDesc, persist bool) *entry {
	e := &entry{m: m, desc: d, fd: -1, inflight: map[uint32]*flight{}}
	if d.ChunkCount > 0 {
		words := (d.ChunkCount + 63) / 64
		e.ready = make([]atomic.Uint64, words)
		e.verified = make([]atomic.Uint64, words)
		e.widened = make([]atomic.Uint64, words)
	}
	if !persist || d.Raw || d.ChunkCount == 0 || (d.UncompressedSize == 0 && !m.opts.Compressed) {
		return e
	}
	if err := e.openFiles(); err != nil {
		m.warnOnce("open:"+d.ID, "blob cache: blob %s: %v; its reads go to the backend", d.ID, err)
		return e
	}
	e.persist = true
	return e
}

// openFiles opens or creates the data file and chunk map, rebuilding both
// when either cannot be trusted.
func (e *entry) openFiles() error {
	dir := e.m.opts.WorkDir
	e.raw = e.m.opts.Compressed
	suffix := ".blob.data"
	size := int64(e.desc.UncompressedSize)
	if e.raw {
		suffix = ".blob.raw"
		size = int64(e.desc.CompressedSize)
		if size == 0 {
			return errors.New("compressed cache needs the blob's compressed size")
		}
	}
	e.dataPath = filepath.Join(dir, e.desc.ID+suffix)
	mapPath := filepath.Join(dir, e.desc.ID+".blob.data.chunk_map")
	f, err := os.OpenFile(e.dataPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	cm, created, err := openChunkMap(mapPath, e.desc.ChunkCount)
	rebuild := false
	switch {
	case errors.Is(err, errBadChunkMap):
		e.m.log.Warnf("blob cache: blob %s: %v; rebuilding its cache", e.desc.ID, err)
		rebuild = true
	case err != nil:
		f.Close()
		return err
	case st.Size() != size && !(created && st.Size() == 0) && st.Size() != 0:
		e.m.log.Warnf("blob cache: blob %s: %s is %d bytes, want %d; rebuilding its cache", e.desc.ID, e.dataPath, st.Size(), size)
		cm.close()
		rebuild = true
	case created && st.Size() != 0:
		// Data without a map: nothing says which bytes are good.
		cm.close()
		os.Remove(mapPath)
		rebuild = true
	case st.Size() == 0 && !created:
		// A map without data (the data file was removed): start over.
		cm.close()
		rebuild = true
	}
	if rebuild {
		if err := f.Truncate(0); err != nil {
			f.Close()
			return err
		}
		if err := os.Remove(mapPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			f.Close()
			return err
		}
		if cm, _, err = openChunkMap(mapPath, e.desc.ChunkCount); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Truncate(size); err != nil {
		cm.close()
		f.Close()
		return err
	}
	e.data, e.fd, e.cmap = f, int(f.Fd()), cm
	if !e.raw {
		// Every mount reads the blob through this one descriptor, so
		// the kernel's read-ahead would take a guest reading scattered
		// files in ascending order for one sequential reader and read
		// megabytes between them. Readers ask for read-ahead within a
		// file themselves (Blob.WillRead). A failure costs only speed.
		_ = unix.Fadvise(e.fd, 0, 0, unix.FADV_RANDOM)
		if size > 0 {
			if v, err := unix.Mmap(e.fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED); err == nil {
				e.view = v
			}
		}
	}
	all := cm.allReady()
	for i := uint32(0); i < e.desc.ChunkCount; i++ {
		if all || cm.isSet(i) {
			e.ready[i/64].Or(1 << (i % 64))
			e.nready.Add(1)
		}
	}
	return nil
}

func (e *entry) sameShape(d BlobDesc) bool {
	return e.desc.ChunkCount == d.ChunkCount && e.desc.UncompressedSize == d.UncompressedSize && e.desc.Raw == d.Raw
}

func bit(bm []atomic.Uint64, i uint32) bool {
	return int(i/64) < len(bm) && bm[i/64].Load()&(1<<(i%64)) != 0
}

func setBit(bm []atomic.Uint64, i uint32) bool {
	if int(i/64) >= len(bm) {
		return false
	}
	old := bm[i/64].Or(1 << (i % 64))
	return old&(1<<(i%64)) == 0
}

// clearBit clears bit i and reports whether it was set.
func clearBit(bm []atomic.Uint64, i uint32) bool {
	if int(i/64) >= len(bm) || bm[i/64].Load()&(1<<(i%64)) == 0 {
		return false
	}
	old := bm[i/64].And(^uint64(1 << (i % 64)))
	return old&(1<<(i%64)) != 0
}

func (e *entry) isReady(i uint32) bool { return e.persist && bit(e.ready, i) }

// store writes a chunk's bytes at its place and marks it ready in memory;
// the chunk map follows at the next flush. A failed write turns storing
// off for the entry (warned once) and reports false.
func (e *entry) store(c *Chunk, b []byte) bool {
	if !e.persist || e.noWrite.Load() {
		return false
	}
	off := c.UncompressedOffset
	limit := e.desc.UncompressedSize
	if e.raw {
		off, limit = c.CompressedOffset, e.desc.CompressedSize
	}
	if c.Index >= e.desc.ChunkCount || off+uint64(len(b)) > limit {
		e.m.warnOnce("range:"+e.desc.ID, "blob cache: blob %s: chunk %d lies outside the blob's cache file; not cached", e.desc.ID, c.Index)
		return false
	}
	for done := 0; done < len(b); {
		n, err := unix.Pwrite(e.fd, b[done:], int64(off)+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			e.noWrite.Store(true)
			e.m.metrics.writeErrors.Add(1)
			e.m.warnOnce("write:"+e.desc.ID, "blob cache: blob %s: writing %s failed (%v); its reads go to the backend from now on", e.desc.ID, e.dataPath, err)
			return false
		}
		done += n
	}
	if setBit(e.ready, c.Index) {
		// pending before nready: flush reads them the other way round.
		e.pmu.Lock()
		e.pending = append(e.pending, c.Index)
		e.pmu.Unlock()
		e.nready.Add(1)
	}
	return true
}

// flush syncs the data file and then marks the chunks written since the
// last flush in the chunk map (see the package doc: crash safety). Writers
// only wait for the swap of the pending list, never for the sync.
func (e *entry) flush() {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	if e.closed {
		return
	}
	e.pmu.Lock()
	batch := e.pending
	e.pending = nil
	e.pmu.Unlock()
	if len(batch) == 0 {
		return
	}
	if err := unix.Fdatasync(e.fd); err != nil {
		e.m.warnOnce("sync:"+e.desc.ID, "blob cache: blob %s: fdatasync: %v; its chunk map is not updated", e.desc.ID, err)
		e.pmu.Lock()
		e.pending = append(e.pending, batch...) // retried at the next flush
		e.pmu.Unlock()
		return
	}
	for _, i := range batch {
		e.cmap.set(i)
	}
	// all_ready only once nothing written is still waiting for a sync
	// (nready first: a chunk is pending before it is counted).
	full := e.nready.Load() == int64(e.desc.ChunkCount)
	e.pmu.Lock()
	synced := len(e.pending) == 0
	e.pmu.Unlock()
	if full && synced && !e.cmap.allReady() {
		e.cmap.setAllReady()
	}
}

// allReady reports whether every chunk is cached.
func (e *entry) allReady() bool {
	return e.persist && e.nready.Load() == int64(e.desc.ChunkCount)
}

func (e *entry) close() error {
	if !e.persist {
		return nil
	}
	e.flush()
	e.fmu.Lock()
	defer e.fmu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	if e.view != nil {
		unix.Munmap(e.view)
		e.view = nil
	}
	return errors.Join(e.cmap.close(), e.data.Close())
}

// String names the entry in messages.
func (e *entry) String() string { return fmt.Sprintf("blob %s", e.desc.ID) }
