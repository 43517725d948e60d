package rafs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
)

// blob is one entry of an image's blob table, with its lazily opened data.
type blob struct {
	index          int
	id             string
	features       uint32
	compression    Compression
	digestAlgo     DigestAlgo
	chunkSize      uint32
	chunkCount     uint32
	compressedSize uint64
	uncompSize     uint64
	tocSize        uint32
	tocDigest      [32]byte
	ciCompressor   Compression
	ciOffset       uint64
	ciCSize        uint64
	ciUSize        uint64
	cipher         uint32
	mappedBlkaddr  uint32
	blocks         uint32
	raw            bool // chunk data is stored raw at its block address (tarfs, plain EROFS)
	hasCI          bool // v6: the blob table describes a ci array

	mu     sync.Mutex
	opened atomic.Pointer[openBlob]

	metaOnce sync.Once
	ci       *CIArray
	digests  []byte // blob.digest array, 32 bytes per chunk
	metaErr  error

	validated []atomic.Uint64 // bit per chunk that passed validation
}

type openBlob struct {
	b  backend.Blob
	fd int // -1 when the backend is not a local file
}

// BlobInfo describes one blob of an image: its blob-table entry (v6, or
// v5 with the extended table) and, for v6, its device-table slot. Fields a
// format does not record are zero.
type BlobInfo struct {
	// ID names the blob for the backend. For a blob that carries the
	// bootstrap inline (and for images opened from such a blob) it is the
	// stem of the file the image was opened from, as nydusd resolves it.
	ID       string
	Features uint32
	// Compression and Digest are the algorithms of the blob's chunks (v5:
	// the image's super flags).
	Compression      Compression
	Digest           DigestAlgo
	ChunkSize        uint32
	ChunkCount       uint32
	CompressedSize   uint64
	UncompressedSize uint64
	// TOCSize (the ToC with its tar header) and TOCDigest (sha256 of
	// both) describe the blob's ToC; 0 when it has none. v6 only.
	TOCSize   uint32
	TOCDigest [32]byte
	// The blob.meta chunk-info array: its compression, offset in the
	// blob, and compressed and uncompressed sizes. v6 only.
	CICompression      Compression
	CIOffset           uint64
	CICompressedSize   uint64
	CIUncompressedSize uint64
	// MappedBlockAddr and DeviceBlocks are the blob's v6 device slot:
	// where its data image sits in the flat block-device view, and its
	// size, in blocks.
	MappedBlockAddr uint32
	DeviceBlocks    uint32
}

// Blobs describes the image's blobs in blob-table order.
func (img *Image) Blobs() []BlobInfo {
	out := make([]BlobInfo, len(img.blobs))
	for i, b := range img.blobs {
		out[i] = BlobInfo{ID: b.id, Features: b.features, Compression: b.compression, Digest: b.digestAlgo,
			ChunkSize: b.chunkSize, ChunkCount: b.chunkCount, CompressedSize: b.compressedSize,
			UncompressedSize: b.uncompSize, TOCSize: b.tocSize, TOCDigest: b.tocDigest,
			CICompression: b.ciCompressor, CIOffset: b.ciOffset, CICompressedSize: b.ciCSize,
			CIUncompressedSize: b.ciUSize, MappedBlockAddr: b.mappedBlkaddr, DeviceBlocks: b.blocks}
	}
	return out
}

// open returns the blob's backend handle, opening it on first use. A
// failed open is retried on the next call (the blob may appear later).
func (b *blob) open(ctx context.Context, be backend.Backend) (*openBlob, error) {
	if o := b.opened.Load(); o != nil {
		return o, nil
	}
	if be == nil {
		return nil, fmt.Errorf("blob %s: no backend configured", b.id)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if o := b.opened.Load(); o != nil {
		return o, nil
	}
	h, err := be.Open(ctx, b.id)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", b.id, err)
	}
	o := &openBlob{b: h, fd: -1}
	if fb, ok := h.(backend.FileBlob); ok {
		o.fd = int(fb.File().Fd())
	}
	b.opened.Store(o)
	return o, nil
}

func (b *blob) close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if o := b.opened.Swap(nil); o != nil {
		return o.b.Close()
	}
	return nil
}

// readRange reads exactly n bytes at off from the blob.
func readRange(ctx context.Context, o *openBlob, off, n uint64, what string) ([]byte, error) {
	size := uint64(o.b.Size())
	if off > size || n > size-off {
		return nil, formatErr("%s: range [%d, +%d) is past the end of the %d-byte blob", what, off, n, size)
	}
	buf := make([]byte, n)
	got, err := o.b.ReadAt(ctx, buf, int64(off))
	if got == len(buf) {
		return buf, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return nil, fmt.Errorf("%s: %w", what, err)
}

// loadMeta reads the blob's ci array and chunk digests once.
func (img *Image) loadMeta(ctx context.Context, b *blob) error {
	b.metaOnce.Do(func() {
		b.metaErr = img.readMeta(ctx, b)
		if b.metaErr != nil {
			b.metaErr = fmt.Errorf("blob %s metadata: %w", b.id, b.metaErr)
		}
		if b.chunkCount > 0 {
			b.validated = make([]atomic.Uint64, (b.chunkCount+63)/64)
		}
	})
	return b.metaErr
}

func (img *Image) readMeta(ctx context.Context, b *blob) error {
	if b.raw || !b.hasCI {
		return nil
	}
	if b.features&(blobSeparate|blobZran|blobBatch|blobEncrypted) != 0 || b.cipher != 0 {
		return fmt.Errorf("features %#x (separate/zran/batch/encrypted) are not supported yet", b.features)
	}
	o, err := b.open(ctx, img.opts.Backend)
	if err != nil {
		return err
	}
	if b.ciUSize == 0 {
		return formatErr("blob table has no ci array")
	}
	raw, err := readRange(ctx, o, b.ciOffset, b.ciCSize+blobMetaHdrSize, "blob.meta")
	if err != nil {
		return err
	}
	h, err := ParseBlobMetaHeader(raw[b.ciCSize:])
	if err != nil {
		return err
	}
	if h.CIEntries != b.chunkCount || h.CICompressor != b.ciCompressor || h.CIOffset != b.ciOffset ||
		h.CICompressedSize != b.ciCSize || h.CIUncompSize != b.ciUSize {
		return formatErr("blob.meta header does not match the blob table")
	}
	data, err := img.codecs.decompress(b.ciCompressor, raw[:b.ciCSize], b.ciUSize)
	if err != nil {
		return fmt.Errorf("ci array: %w", err)
	}
	if b.ci, err = NewCIArray(data, b.chunkCount, b.features&blobChunkInfoV2 != 0); err != nil {
		return err
	}
	if b.features&blobInlinedDigest != 0 && b.features&blobHasTOC != 0 && b.tocSize > 0 {
		b.digests, err = img.readDigests(ctx, o, b)
		if err != nil {
			return err
		}
	}
	return nil
}

// readTOC reads and parses a blob's ToC (tocSize bytes, or found from the
// end of the blob when 0).
func readTOC(ctx context.Context, o *openBlob, tocSize uint64) ([]TOCEntry, [32]byte, error) {
	size := uint64(o.b.Size())
	n := tocSize
	if n == 0 {
		n = min(4096, size&^(tocEntrySize-1))
	}
	if n > size || n > maxTOCSize+tarBlockSize {
		return nil, [32]byte{}, formatErr("toc of %d bytes in a %d-byte blob", n, size)
	}
	tail, err := readRange(ctx, o, size-n, n, "toc")
	if err != nil {
		return nil, [32]byte{}, err
	}
	ents, tsize, dig, err := ParseTOC(tail)
	if err != nil {
		return nil, dig, err
	}
	if tocSize != 0 && tsize != tocSize {
		return nil, dig, formatErr("toc: %d bytes, the blob table says %d", tsize, tocSize)
	}
	return ents, dig, nil
}

func (img *Image) readDigests(ctx context.Context, o *openBlob, b *blob) ([]byte, error) {
	ents, dig, err := readTOC(ctx, o, uint64(b.tocSize))
	if err != nil {
		return nil, err
	}
	if b.tocDigest != ([32]byte{}) && dig != b.tocDigest {
		return nil, formatErr("toc digest %x, the blob table says %x", dig, b.tocDigest)
	}
	for _, e := range ents {
		if e.Name != "blob.digest" {
			continue
		}
		return img.tocEntryData(ctx, o, e, uint64(b.chunkCount)*32)
	}
	return nil, formatErr("toc has no blob.digest entry")
}

// tocEntryData reads, decompresses and verifies one ToC entry's bytes.
func (img *Image) tocEntryData(ctx context.Context, o *openBlob, e TOCEntry, want uint64) ([]byte, error) {
	algo, err := e.Compression()
	if err != nil {
		return nil, err
	}
	if want != 0 && e.UncompressedSize != want {
		return nil, formatErr("toc entry %s: %d bytes, want %d", e.Name, e.UncompressedSize, want)
	}
	if e.CompressedSize > maxBootstrapSize || e.UncompressedSize > maxBootstrapSize {
		return nil, formatErr("toc entry %s: absurd size", e.Name)
	}
	raw, err := readRange(ctx, o, e.CompressedOffset, e.CompressedSize, "toc entry "+e.Name)
	if err != nil {
		return nil, err
	}
	data, err := img.codecs.decompress(algo, raw, e.UncompressedSize)
	if err != nil {
		return nil, fmt.Errorf("toc entry %s: %w", e.Name, err)
	}
	if got, _ := digest(DigestSHA256, data); got != e.SHA256 {
		return nil, formatErr("toc entry %s: sha256 %x, want %x", e.Name, got, e.SHA256)
	}
	return data, nil
}

// memBlob is a backend blob over bytes in memory (an image file being
// opened as an inline-bootstrap blob).
type memBlob []byte

func (m memBlob) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(m)) {
		return 0, io.EOF
	}
	n := copy(p, m[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (m memBlob) Size() int64  { return int64(len(m)) }
func (m memBlob) Close() error { return nil }

// extractInlineBootstrap finds the bootstrap inside a data blob: through
// the ToC's image.boot entry, or else a trailing tar header "image.boot".
func (img *Image) extractInlineBootstrap(data []byte) ([]byte, error) {
	o := &openBlob{b: memBlob(data), fd: -1}
	ctx := context.Background()
	ents, _, err := readTOC(ctx, o, 0)
	if err == nil {
		for _, e := range ents {
			if e.Name == "image.boot" {
				return img.tocEntryData(ctx, o, e, 0)
			}
		}
		return nil, formatErr("neither a RAFS bootstrap nor a blob with an inlined bootstrap (the ToC has no image.boot)")
	}
	if len(data) >= tarBlockSize {
		h, herr := parseTarHeader(data[len(data)-tarBlockSize:])
		if herr == nil && h.name == "image.boot" && h.size <= uint64(len(data)-tarBlockSize) {
			return data[uint64(len(data)-tarBlockSize)-h.size : len(data)-tarBlockSize], nil
		}
	}
	return nil, fmt.Errorf("no RAFS v5/v6 magic and no blob ToC: %w", err)
}
