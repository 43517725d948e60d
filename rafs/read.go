package rafs

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/fsapi"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
)

// chunkRef is one chunk of a regular file, as its inode describes it.
type chunkRef struct {
	fileOff uint64 // where the chunk starts in the file
	length  uint32 // file bytes it covers
	blob    uint32 // blob-table index
	primary bool   // plain EROFS: the data is in the bootstrap itself
	hole    bool   // EROFS null address: zeros
	needCI  bool   // v6: ci must be looked up by ciIndex
	ciIndex uint32
	blkaddr uint64 // v6: uncompressed offset in the blob (bytes)
	ci      ChunkInfo
}

// resolve fills in c.ci for v6 chunks from the blob's ci array (or the
// bootstrap chunk table) and its digest array.
func (img *Image) resolve(ctx context.Context, c *chunkRef) error {
	if !c.needCI {
		return nil
	}
	b := img.blobs[c.blob]
	m6, _ := img.f.(*v6)
	var metaErr error
	if img.opts.Backend != nil {
		metaErr = img.loadMeta(ctx, b)
		if metaErr != nil && !errors.Is(metaErr, backend.ErrNotFound) {
			// A blob that is present but inconsistent is an error; only
			// a missing blob falls back to the bootstrap chunk table.
			return metaErr
		}
	}
	switch {
	case metaErr == nil && b.ci != nil:
		ci, err := b.ci.Get(c.ciIndex)
		if err != nil {
			return fmt.Errorf("blob %s: %w", b.id, err)
		}
		if b.digests != nil && uint64(c.ciIndex)*32+32 <= uint64(len(b.digests)) {
			copy(ci.Digest[:], b.digests[c.ciIndex*32:])
			ci.HasDigest = true
		} else if m6 != nil {
			if e, ok := m6.chunkTableEntry(c.blob, c.ciIndex); ok {
				ci.Digest, ci.HasDigest = e.Digest, true
			}
		}
		c.ci = ci
	default:
		e, ok := m6.chunkTableEntry(c.blob, c.ciIndex)
		if !ok {
			if metaErr != nil {
				return metaErr
			}
			return fmt.Errorf("blob %s: no chunk info for ci %d", b.id, c.ciIndex)
		}
		c.ci = e
	}
	c.ci.Index = c.ciIndex
	if c.ci.UncompressedOffset != c.blkaddr {
		return formatErr("blob %s ci %d: uncompressed offset %#x, the inode says %#x", b.id, c.ciIndex, c.ci.UncompressedOffset, c.blkaddr)
	}
	if c.ci.UncompressedSize < c.length || c.ci.UncompressedSize > maxChunkSize || c.ci.CompressedSize > 2*maxChunkSize {
		return formatErr("blob %s ci %d: sizes %d/%d for a %d-byte chunk", b.id, c.ciIndex, c.ci.CompressedSize, c.ci.UncompressedSize, c.length)
	}
	return nil
}

// needsValidation reports whether reads of chunk c must check a digest
// (storage checks it once per process and chunk).
func (img *Image) needsValidation(b *blob, c *chunkRef) bool {
	return img.opts.DigestValidate && !b.raw && (c.ci.HasDigest || c.ci.Flags&ciHasCRC32 != 0)
}

// storageChunk describes chunk c to the storage layer.
func (img *Image) storageChunk(b *blob, c *chunkRef) storage.Chunk {
	return toStorage(&c.ci, img.needsValidation(b, c))
}

func toStorage(ci *ChunkInfo, verify bool) storage.Chunk {
	return storage.Chunk{Index: ci.Index, CompressedOffset: ci.CompressedOffset, CompressedSize: ci.CompressedSize,
		UncompressedOffset: ci.UncompressedOffset, UncompressedSize: ci.UncompressedSize, Compressed: ci.Compressed,
		Verify: verify, Digest: ci.Digest, HasDigest: ci.HasDigest, CRC32: ci.CRC32, Flags: ci.Flags}
}

// decoder is a blob's storage.Decoder: decompression and digest checks.
type decoder struct{ b *blob }

func (d decoder) Decode(c *storage.Chunk, raw []byte) ([]byte, error) {
	b := d.b
	data := raw
	if c.Compressed {
		var err error
		if data, err = b.img.codecs.decompress(b.compression, raw, uint64(c.UncompressedSize)); err != nil {
			return nil, fmt.Errorf("blob %s chunk %d: %w", b.id, c.Index, err)
		}
	} else if len(raw) != int(c.UncompressedSize) {
		return nil, formatErr("blob %s chunk %d: uncompressed chunk of %d bytes, want %d", b.id, c.Index, len(raw), c.UncompressedSize)
	}
	if c.Verify {
		if err := d.Verify(c, data); err != nil {
			return nil, err
		}
	}
	return data, nil
}

func (d decoder) Verify(c *storage.Chunk, data []byte) error {
	b := d.b
	ci := ChunkInfo{Index: c.Index, Digest: c.Digest, HasDigest: c.HasDigest, CRC32: c.CRC32, Flags: c.Flags}
	if err := verifyChunk(b.digestAlgo, &ci, data); err != nil {
		if b.img.logOK() {
			b.img.log.WithField("blob", b.id).Errorf("digest validation failed: %v", err)
		}
		return fmt.Errorf("blob %s: %w: %v", b.id, ErrDigest, err)
	}
	return nil
}

// chunkSource lists a v6 blob's chunks from its ci array, for merging.
type chunkSource struct{ b *blob }

func (s chunkSource) Chunk(i uint32) (storage.Chunk, bool) {
	b := s.b
	if !b.metaDone.Load() || b.ci == nil {
		return storage.Chunk{}, false
	}
	ci, err := b.ci.Get(i)
	if err != nil || ci.UncompressedSize > maxChunkSize || ci.CompressedSize > 2*maxChunkSize {
		return storage.Chunk{}, false
	}
	ci.Index = i
	if b.digests != nil && uint64(i)*32+32 <= uint64(len(b.digests)) {
		copy(ci.Digest[:], b.digests[i*32:])
		ci.HasDigest = true
	}
	return toStorage(&ci, b.img.opts.DigestValidate && (ci.HasDigest || ci.Flags&ciHasCRC32 != 0)), true
}

// readPlan gathers the resolved chunks of n overlapping [off, end).
func (img *Image) readPlan(ctx context.Context, n *Inode, off, end uint64) ([]chunkRef, error) {
	var refs []chunkRef
	err := img.f.chunks(n, off, end, func(c chunkRef) error {
		if c.hole || c.primary {
			refs = append(refs, c)
			return nil
		}
		if err := img.resolve(ctx, &c); err != nil {
			return err
		}
		refs = append(refs, c)
		return nil
	})
	return refs, err
}

// readFile reads n's bytes [off, off+len(p)) into p (clamped to the file
// size). When segs is true and every byte sits uncompressed in a local
// file, it returns segments instead of reading (p is left untouched).
func (img *Image) readFile(ctx context.Context, n *Inode, p []byte, off uint64, segs bool) ([]fsapi.Segment, int, error) {
	if n.IsDir() {
		return nil, 0, syscall.EISDIR
	}
	if !n.IsRegular() {
		return nil, 0, syscall.EINVAL
	}
	if off >= n.Size || len(p) == 0 {
		return nil, 0, nil
	}
	end := min(n.Size, off+uint64(len(p)))
	p = p[:end-off]
	if data, flat, err := img.f.flatData(n); flat {
		if err != nil {
			return nil, 0, err
		}
		clear(p)
		if off < uint64(len(data)) {
			copy(p, data[off:])
		}
		return nil, len(p), nil
	}
	refs, err := img.readPlan(ctx, n, off, end)
	if err != nil {
		return nil, 0, err
	}
	locs, err := img.locate(ctx, refs)
	if err != nil {
		return nil, 0, err
	}
	img.willRead(ctx, n, refs, off, end)
	if segs {
		if s, ok := segmentsOf(refs, locs, off, end); ok {
			return s, int(end - off), nil
		}
	}
	clear(p)
	for i := range refs {
		c := &refs[i]
		s, e := max(off, c.fileOff), min(end, c.fileOff+uint64(c.length))
		if s >= e {
			continue
		}
		if err := img.copyChunk(c, &locs[i], p[s-off:e-off], s-c.fileOff); err != nil {
			return nil, 0, err
		}
	}
	return nil, len(p), nil
}

// maxAhead bounds how far past a read of a file rafs asks the blob cache
// to have the file's next chunks read into the host's page cache.
const maxAhead = 8 << 20

// errEnough ends a walk over a file's chunks early.
var errEnough = errors.New("enough chunks")

// willRead asks the blob cache (storage.Blob.WillRead) to read the chunks
// of n from the start of a read to some way past its end, never past the
// file's end: the cache file has no kernel read-ahead of its own, so that
// a guest reading scattered files reads no bytes of their neighbours. The
// way ahead grows with the offset, as the kernel's read-ahead window
// grows with a sequential reader: twice the read at the file's start, the
// offset itself further on, at most maxAhead. Only a read that starts the
// file or contains the start of a chunk asks, so a sequential reader asks
// once per chunk. It looks only at chunks of the blob the walk meets
// first, once that blob is open and its chunk table loaded: a hint never
// fetches anything.
func (img *Image) willRead(ctx context.Context, n *Inode, refs []chunkRef, off, end uint64) {
	if end >= n.Size {
		return
	}
	starts := off == 0
	for i := range refs {
		if refs[i].fileOff >= off {
			starts = true
			break
		}
	}
	if !starts {
		return
	}
	var (
		want []storage.Chunk
		o    *openBlob
		bi   uint32
	)
	// add takes c (resolved) into want unless it belongs to another
	// blob than the chunks before it or its blob is not open.
	add := func(c *chunkRef) bool {
		b := img.blobs[c.blob]
		ob := b.opened.Load()
		if ob == nil || ob.s == nil || (o != nil && c.blob != bi) {
			return false
		}
		o, bi = ob, c.blob
		want = append(want, img.storageChunk(b, c))
		return true
	}
	// The read's own chunks are resolved already; the walk goes on
	// from the end of the last one.
	from, more := off, true
	for i := range refs {
		c := &refs[i]
		if !c.hole && !c.primary && !add(c) {
			more = false
			break
		}
		from = c.fileOff + uint64(c.length)
	}
	ahead := min(max(2*(end-off), off), maxAhead)
	if wend := min(n.Size, end+ahead); more && from < wend {
		img.f.chunks(n, from, wend, func(c chunkRef) error {
			if c.hole || c.primary {
				return nil
			}
			if c.needCI && img.opts.Backend != nil && !img.blobs[c.blob].metaDone.Load() {
				return errEnough
			}
			if err := img.resolve(ctx, &c); err != nil || !add(&c) {
				return errEnough
			}
			return nil
		})
	}
	if o != nil {
		o.s.WillRead(want)
	}
}

// locate finds where each chunk's bytes are, through the storage layer
// (one call per blob, so that a read's missing chunks of one blob are
// fetched together) and the small decompressed-chunk cache. Holes and
// chunks stored in the bootstrap get no location.
func (img *Image) locate(ctx context.Context, refs []chunkRef) ([]storage.Location, error) {
	locs := make([]storage.Location, len(refs))
	for i := range locs {
		locs[i].Fd = -1
	}
	done := make([]bool, len(refs))
	for i := range refs {
		c := &refs[i]
		if c.hole || c.primary {
			done[i] = true
			continue
		}
		if d := img.cache.get(img.cacheKey(c)); d != nil {
			locs[i].Data, done[i] = d, true
		}
	}
	var idx []int
	var want []storage.Chunk
	var got []storage.Location
	for i := range refs {
		if done[i] {
			continue
		}
		bi := refs[i].blob
		b := img.blobs[bi]
		o, err := b.open(ctx, img.opts.Backend)
		if err != nil {
			return nil, err
		}
		idx, want = idx[:0], want[:0]
		for j := i; j < len(refs); j++ {
			if !done[j] && refs[j].blob == bi {
				idx = append(idx, j)
				want = append(want, img.storageChunk(b, &refs[j]))
				done[j] = true
			}
		}
		got = append(got[:0], make([]storage.Location, len(want))...)
		if err := o.s.Get(ctx, want, got); err != nil {
			return nil, err
		}
		for k, j := range idx {
			locs[j] = got[k]
			// Only decompressed chunks are worth keeping: an uncompressed
			// one comes back as a file location once checked.
			if got[k].Fd < 0 && got[k].Data != nil && refs[j].ci.Compressed {
				img.cache.put(img.cacheKey(&refs[j]), got[k].Data)
			}
		}
	}
	return locs, nil
}

func (img *Image) cacheKey(c *chunkRef) chunkKey {
	return chunkKey{blob: int(c.blob), off: c.ci.CompressedOffset, size: c.ci.UncompressedSize}
}

// segmentsOf describes [off, end) as file segments if every chunk is in a
// file and the chunks cover the range densely.
func segmentsOf(refs []chunkRef, locs []storage.Location, off, end uint64) ([]fsapi.Segment, bool) {
	var out []fsapi.Segment
	pos := off
	for i := range refs {
		c := &refs[i]
		if locs[i].Fd < 0 || c.fileOff > pos {
			return nil, false
		}
		s, e := max(pos, c.fileOff), min(end, c.fileOff+uint64(c.length))
		if s >= e {
			continue
		}
		fd, boff := locs[i].Fd, locs[i].Off+int64(s-c.fileOff)
		if k := len(out) - 1; k >= 0 && out[k].Fd == fd && out[k].Off+int64(out[k].Len) == boff {
			out[k].Len += int(e - s)
		} else {
			out = append(out, fsapi.Segment{Fd: fd, Off: boff, Len: int(e - s)})
		}
		pos = e
	}
	return out, pos == end
}

// copyChunk copies len(dst) bytes of chunk c, starting within bytes into
// the chunk, from where loc says they are.
func (img *Image) copyChunk(c *chunkRef, loc *storage.Location, dst []byte, within uint64) error {
	switch {
	case c.hole:
		clear(dst)
		return nil
	case c.primary:
		src, err := span(img.data, c.blkaddr+within, uint64(len(dst)), "erofs primary-device data")
		if err != nil {
			return err
		}
		copy(dst, src)
		return nil
	case loc.Fd >= 0:
		for done := 0; done < len(dst); {
			n, err := unix.Pread(loc.Fd, dst[done:], loc.Off+int64(within)+int64(done))
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("blob %s: read cached chunk: %w", img.blobs[c.blob].id, err)
			}
			if n == 0 {
				return fmt.Errorf("blob %s: read cached chunk: %w", img.blobs[c.blob].id, io.ErrUnexpectedEOF)
			}
			done += n
		}
		return nil
	}
	if within+uint64(len(dst)) > uint64(len(loc.Data)) {
		return formatErr("blob %s chunk %d: %d bytes, need %d", img.blobs[c.blob].id, c.ci.Index, len(loc.Data), within+uint64(len(dst)))
	}
	copy(dst, loc.Data[within:])
	return nil
}

// ErrDigest is wrapped by reads whose chunk failed digest validation.
var ErrDigest = errors.New("chunk digest mismatch")

type chunkKey struct {
	blob int
	off  uint64
	size uint32
}

// chunkCache keeps a few decompressed chunks, sharded so that concurrent
// reads of different chunks do not contend on one lock.
type chunkCache struct {
	seed   maphash.Seed
	shards []cacheShard
}

type cacheShard struct {
	mu   sync.Mutex
	keys []chunkKey
	vals [][]byte
	next int
}

const cacheWays = 2

func newChunkCache(n int) *chunkCache {
	if n <= 0 {
		return &chunkCache{}
	}
	c := &chunkCache{seed: maphash.MakeSeed(), shards: make([]cacheShard, (n+cacheWays-1)/cacheWays)}
	return c
}

func (c *chunkCache) shard(k chunkKey) *cacheShard {
	if len(c.shards) == 0 {
		return nil
	}
	h := maphash.Comparable(c.seed, k)
	return &c.shards[h%uint64(len(c.shards))]
}

func (c *chunkCache) get(k chunkKey) []byte {
	s := c.shard(k)
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, kk := range s.keys {
		if kk == k {
			return s.vals[i]
		}
	}
	return nil
}

func (c *chunkCache) put(k chunkKey, v []byte) {
	s := c.shard(k)
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.keys) < cacheWays {
		s.keys, s.vals = append(s.keys, k), append(s.vals, v)
		return
	}
	s.keys[s.next], s.vals[s.next] = k, v
	s.next = (s.next + 1) % cacheWays
}

// readInto is ReadAt on a decoded inode.
func (img *Image) readInto(ctx context.Context, n *Inode, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, syscall.EINVAL
	}
	_, got, err := img.readFile(ctx, n, p, uint64(off), false)
	return got, err
}
