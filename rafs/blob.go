package rafs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
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

	img *Image // set when the image is opened

	mu     sync.Mutex
	opened atomic.Pointer[openBlob]

	// metaMu guards the chunk-info and digest arrays, loaded once they
	// load: a failure is returned to the caller and retried by the next
	// one (a transient backend error must not poison the blob).
	metaMu   sync.Mutex
	metaDone atomic.Bool
	ci       *CIArray
	digests  []byte // blob.digest array, 32 bytes per chunk
}

// openBlob is a blob's storage handle (or, for an image being opened
// from a blob with its bootstrap inline, the blob's bytes).
type openBlob struct {
	r ranger
	s *storage.Blob // nil for in-memory blobs
}

// ranger reads byte ranges of a blob (metadata: blob.meta, ToC, digests).
type ranger interface {
	ReadRange(ctx context.Context, off, n uint64) ([]byte, error)
	Size(ctx context.Context) (int64, error)
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

// open returns the blob's storage handle, opening it on first use. A
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
	desc := storage.BlobDesc{ID: b.id, ChunkCount: b.chunkCount, UncompressedSize: b.uncompSize,
		CompressedSize: b.compressedSize, Raw: b.raw}
	var src storage.ChunkSource
	if b.hasCI {
		src = chunkSource{b}
	}
	h, err := b.img.store.Open(desc, be, decoder{b}, src)
	if err != nil {
		return nil, err
	}
	o := &openBlob{r: h, s: h}
	b.opened.Store(o)
	return o, nil
}

func (b *blob) close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if o := b.opened.Swap(nil); o != nil && o.s != nil {
		return o.s.Close()
	}
	return nil
}

// readRange reads exactly n bytes at off from the blob.
func readRange(ctx context.Context, o *openBlob, off, n uint64, what string) ([]byte, error) {
	sz, err := o.r.Size(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	size := uint64(sz)
	if off > size || n > size-off {
		return nil, formatErr("%s: range [%d, +%d) is past the end of the %d-byte blob", what, off, n, size)
	}
	buf, err := o.r.ReadRange(ctx, off, n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return buf, nil
}

// loadMeta reads the blob's ci array and chunk digests. Success is
// remembered; a failure is not, so the next read tries again.
func (img *Image) loadMeta(ctx context.Context, b *blob) error {
	if b.metaDone.Load() {
		return nil
	}
	b.metaMu.Lock()
	defer b.metaMu.Unlock()
	if b.metaDone.Load() {
		return nil
	}
	if err := img.readMeta(ctx, b); err != nil {
		return fmt.Errorf("blob %s metadata: %w", b.id, err)
	}
	b.metaDone.Store(true)
	return nil
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
	data := img.cachedMeta(b, o)
	if data == nil {
		raw, err := readRange(ctx, o, b.ciOffset, b.ciCSize+blobMetaHdrSize, "blob.meta")
		if err != nil {
			return err
		}
		if err := b.checkMetaHeader(raw[b.ciCSize:]); err != nil {
			return err
		}
		if data, err = img.codecs.decompress(b.ciCompressor, raw[:b.ciCSize], b.ciUSize); err != nil {
			return fmt.Errorf("ci array: %w", err)
		}
		if o.s != nil {
			// nydusd's <blob_id>.blob.meta: the ci data padded to 4 KiB,
			// then the header.
			padded := (b.ciUSize + 4095) &^ 4095
			file := make([]byte, padded+blobMetaHdrSize)
			copy(file, data)
			copy(file[padded:], raw[b.ciCSize:])
			o.s.WriteAux(storage.MetaSuffix, file)
		}
	}
	ci, err := NewCIArray(data, b.chunkCount, b.features&blobChunkInfoV2 != 0)
	if err != nil {
		return err
	}
	b.ci = ci
	if b.features&blobInlinedDigest != 0 && b.features&blobHasTOC != 0 && b.tocSize > 0 {
		want := uint64(b.chunkCount) * 32
		digests := o.s.ReadAux(storage.DigestSuffix)
		if uint64(len(digests)) != want {
			var err error
			if digests, err = img.readDigests(ctx, o, b); err != nil {
				b.ci = nil
				return err
			}
			o.s.WriteAux(storage.DigestSuffix, digests)
		}
		b.digests = digests
	}
	return nil
}

// checkMetaHeader checks a blob.meta header against the blob table.
func (b *blob) checkMetaHeader(hdr []byte) error {
	h, err := ParseBlobMetaHeader(hdr)
	if err != nil {
		return err
	}
	if h.CIEntries != b.chunkCount || h.CICompressor != b.ciCompressor || h.CIOffset != b.ciOffset ||
		h.CICompressedSize != b.ciCSize || h.CIUncompSize != b.ciUSize {
		return formatErr("blob.meta header does not match the blob table")
	}
	return nil
}

// cachedMeta returns the uncompressed ci data from the cache directory's
// <blob_id>.blob.meta when it is there, of the right size and its header
// matches the blob table; nil otherwise (it is then fetched and rewritten).
func (img *Image) cachedMeta(b *blob, o *openBlob) []byte {
	if o.s == nil {
		return nil
	}
	file := o.s.ReadAux(storage.MetaSuffix)
	padded := (b.ciUSize + 4095) &^ 4095
	if file == nil || uint64(len(file)) != padded+blobMetaHdrSize {
		return nil
	}
	if err := b.checkMetaHeader(file[padded:]); err != nil {
		if img.logOK() {
			img.log.WithField("blob", b.id).Warnf("cached blob.meta not used: %v", err)
		}
		return nil
	}
	return file[:b.ciUSize:b.ciUSize]
}

// readTOC reads and parses a blob's ToC (tocSize bytes, or found from the
// end of the blob when 0).
func readTOC(ctx context.Context, o *openBlob, tocSize uint64) ([]TOCEntry, [32]byte, error) {
	sz, err := o.r.Size(ctx)
	if err != nil {
		return nil, [32]byte{}, err
	}
	size := uint64(sz)
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

// memBlob is a blob over bytes in memory (an image file being opened as an
// inline-bootstrap blob).
type memBlob []byte

func (m memBlob) Size(context.Context) (int64, error) { return int64(len(m)), nil }

func (m memBlob) ReadRange(_ context.Context, off, n uint64) ([]byte, error) {
	if off > uint64(len(m)) || n > uint64(len(m))-off {
		return nil, io.ErrUnexpectedEOF
	}
	return m[off : off+n], nil
}

// extractInlineBootstrap finds the bootstrap inside a data blob: through
// the ToC's image.boot entry, or else a trailing tar header "image.boot".
func (img *Image) extractInlineBootstrap(data []byte) ([]byte, error) {
	o := &openBlob{r: memBlob(data)}
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
