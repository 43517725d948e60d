package rafs

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"syscall"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
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

// needsValidation reports whether a read of chunk c must check a digest.
func (img *Image) needsValidation(b *blob, c *chunkRef) bool {
	if !img.opts.DigestValidate || b.raw || (!c.ci.HasDigest && c.ci.Flags&ciHasCRC32 == 0) {
		return false
	}
	if img.f.version() == 6 && c.ci.Index < b.chunkCount && b.validated != nil {
		return b.validated[c.ci.Index/64].Load()&(1<<(c.ci.Index%64)) == 0
	}
	return true
}

func (img *Image) markValidated(b *blob, c *chunkRef) {
	if img.f.version() == 6 && c.ci.Index < b.chunkCount && b.validated != nil {
		b.validated[c.ci.Index/64].Or(1 << (c.ci.Index % 64))
	}
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
func (img *Image) readFile(ctx context.Context, n *Inode, p []byte, off uint64, segs bool) ([]fusewire.Segment, int, error) {
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
	if segs {
		if s, ok := img.segments(ctx, refs, off, end); ok {
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
		if err := img.readChunk(ctx, c, p[s-off:e-off], s-c.fileOff); err != nil {
			return nil, 0, err
		}
	}
	return nil, len(p), nil
}

// segments describes [off, end) as file segments if every chunk is
// uncompressed in a local file, covers its range densely and needs no
// validation.
func (img *Image) segments(ctx context.Context, refs []chunkRef, off, end uint64) ([]fusewire.Segment, bool) {
	var out []fusewire.Segment
	pos := off
	for i := range refs {
		c := &refs[i]
		if c.hole || c.primary || c.ci.Compressed || c.fileOff > pos {
			return nil, false
		}
		b := img.blobs[c.blob]
		if img.needsValidation(b, c) {
			return nil, false
		}
		o, err := b.open(ctx, img.opts.Backend)
		if err != nil || o.fd < 0 {
			return nil, false
		}
		s, e := max(pos, c.fileOff), min(end, c.fileOff+uint64(c.length))
		if s >= e {
			continue
		}
		boff := c.ci.CompressedOffset + (s - c.fileOff)
		if boff+(e-s) > uint64(o.b.Size()) {
			return nil, false
		}
		if k := len(out) - 1; k >= 0 && out[k].Fd == o.fd && out[k].Off+int64(out[k].Len) == int64(boff) {
			out[k].Len += int(e - s)
		} else {
			out = append(out, fusewire.Segment{Fd: o.fd, Off: int64(boff), Len: int(e - s)})
		}
		pos = e
	}
	return out, pos == end
}

// readChunk copies len(dst) bytes of chunk c, starting within bytes into
// the chunk, to dst.
func (img *Image) readChunk(ctx context.Context, c *chunkRef, dst []byte, within uint64) error {
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
	}
	b := img.blobs[c.blob]
	o, err := b.open(ctx, img.opts.Backend)
	if err != nil {
		return err
	}
	if !c.ci.Compressed && !img.needsValidation(b, c) {
		data, err := readRange(ctx, o, c.ci.CompressedOffset+within, uint64(len(dst)), "chunk data")
		if err != nil {
			return fmt.Errorf("blob %s: %w", b.id, err)
		}
		copy(dst, data)
		return nil
	}
	data, err := img.chunkData(ctx, b, o, c)
	if err != nil {
		return err
	}
	if within+uint64(len(dst)) > uint64(len(data)) {
		return formatErr("blob %s chunk %d: %d bytes, need %d", b.id, c.ci.Index, len(data), within+uint64(len(dst)))
	}
	copy(dst, data[within:])
	return nil
}

// chunkData returns the whole uncompressed (and, when asked, validated)
// chunk, through the small decompressed-chunk cache.
func (img *Image) chunkData(ctx context.Context, b *blob, o *openBlob, c *chunkRef) ([]byte, error) {
	key := chunkKey{blob: b.index, off: c.ci.CompressedOffset, size: c.ci.UncompressedSize}
	if d := img.cache.get(key); d != nil {
		return d, nil
	}
	raw, err := readRange(ctx, o, c.ci.CompressedOffset, uint64(c.ci.CompressedSize), "chunk data")
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", b.id, err)
	}
	data := raw
	if c.ci.Compressed {
		if data, err = img.codecs.decompress(b.compression, raw, uint64(c.ci.UncompressedSize)); err != nil {
			return nil, fmt.Errorf("blob %s chunk %d: %w", b.id, c.ci.Index, err)
		}
	} else if len(data) != int(c.ci.UncompressedSize) {
		return nil, formatErr("blob %s chunk %d: uncompressed chunk of %d bytes, want %d", b.id, c.ci.Index, len(data), c.ci.UncompressedSize)
	}
	if img.needsValidation(b, c) {
		if err := verifyChunk(b.digestAlgo, &c.ci, data); err != nil {
			if img.logOK() {
				img.log.WithField("blob", b.id).Errorf("digest validation failed: %v", err)
			}
			return nil, fmt.Errorf("blob %s: %w: %v", b.id, ErrDigest, err)
		}
		img.markValidated(b, c)
	}
	img.cache.put(key, data)
	return data, nil
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
