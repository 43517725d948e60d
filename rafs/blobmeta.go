package rafs

import (
	"crypto/sha256"
	"fmt"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/layout"
)

// tarHeader is the part of a tar header the blob sections use.
type tarHeader struct {
	name string
	size uint64
}

// parseTarHeader decodes a 512-byte tar header and checks its checksum.
func parseTarHeader(b []byte) (tarHeader, error) {
	var h layout.TarHeader
	err := h.Decode(b)
	return tarHeader{name: h.Name, size: h.Size}, err
}

// ParseTOC decodes a blob's ToC from the tail of the blob: tail must end
// with the 512-byte tar header named "rafs.blob.toc", preceded by the
// 128-byte entries it describes. It also returns the ToC's total size
// (entries plus header) and its sha256 (the blob table's blob_toc_digest).
func ParseTOC(tail []byte) (entries []TOCEntry, size uint64, digest [32]byte, err error) {
	if len(tail) < tarBlockSize {
		return nil, 0, digest, formatErr("toc: %d bytes, too short for its tar header", len(tail))
	}
	hdr, err := parseTarHeader(tail[len(tail)-tarBlockSize:])
	if err != nil {
		return nil, 0, digest, fmt.Errorf("toc: %w", err)
	}
	if hdr.name != layout.TOCName {
		return nil, 0, digest, formatErr("toc: tar header names %q, want %q", hdr.name, layout.TOCName)
	}
	if hdr.size%tocEntrySize != 0 || hdr.size > maxTOCSize || hdr.size > uint64(len(tail)-tarBlockSize) {
		return nil, 0, digest, formatErr("toc: bad size %d (have %d bytes)", hdr.size, len(tail)-tarBlockSize)
	}
	raw := tail[uint64(len(tail))-tarBlockSize-hdr.size:]
	entries = make([]TOCEntry, hdr.size/tocEntrySize)
	for i := range entries {
		entries[i].Decode(raw[i*tocEntrySize:])
	}
	return entries, uint64(len(raw)), sha256.Sum256(raw), nil
}

// BlobMetaHeader is the 4096-byte blob.meta header
// (BlobCompressionContextHeader) that follows a blob's ci array.
type BlobMetaHeader = layout.BlobMetaHeader

// ParseBlobMetaHeader decodes and checks a blob.meta header.
func ParseBlobMetaHeader(b []byte) (*BlobMetaHeader, error) {
	if len(b) != blobMetaHdrSize {
		return nil, formatErr("blob.meta header: %d bytes, want 4096", len(b))
	}
	h := &BlobMetaHeader{}
	h.Decode(b)
	if h.Magic != layout.BlobMetaMagic || h.Magic2 != layout.BlobMetaMagic {
		return nil, formatErr("blob.meta header: bad magic %#x/%#x", h.Magic, h.Magic2)
	}
	if h.CIEntries > maxChunkCount {
		return nil, formatErr("blob.meta header: %d entries", h.CIEntries)
	}
	if h.CICompressedSize > h.CIUncompSize {
		return nil, formatErr("blob.meta header: ci compressed size %d > uncompressed %d", h.CICompressedSize, h.CIUncompSize)
	}
	return h, nil
}

// ChunkInfo describes where one chunk's bytes are.
type ChunkInfo struct {
	CompressedOffset   uint64
	CompressedSize     uint32
	UncompressedOffset uint64
	UncompressedSize   uint32
	Compressed         bool
	// Flags holds the v2 ci flags or the v5 chunk flags.
	Flags uint32
	// Index is the chunk's number inside its blob (v6 ci index, v5 index).
	Index uint32
	// Digest is the digest of the uncompressed bytes, when known.
	Digest    [32]byte
	HasDigest bool
	// CRC32 is the CRC32C of the uncompressed bytes when Flags has it.
	CRC32 uint32
}

// CIArray is a decoded-on-demand blob.meta chunk-info array.
type CIArray struct {
	data []byte
	v2   bool
	n    uint32
}

// NewCIArray wraps the uncompressed ci data of a blob with count entries;
// v2 selects 24-byte entries.
func NewCIArray(data []byte, count uint32, v2 bool) (*CIArray, error) {
	es := uint64(layout.CIV1Size)
	if v2 {
		es = layout.CIV2Size
	}
	if count > maxChunkCount || uint64(count)*es > uint64(len(data)) {
		return nil, formatErr("ci array: %d entries of %d bytes do not fit in %d bytes", count, es, len(data))
	}
	return &CIArray{data: data, v2: v2, n: count}, nil
}

// Len is the number of entries.
func (a *CIArray) Len() uint32 { return a.n }

// Get decodes entry i.
func (a *CIArray) Get(i uint32) (ChunkInfo, error) {
	if i >= a.n {
		return ChunkInfo{}, formatErr("ci index %d out of range (%d entries)", i, a.n)
	}
	if a.v2 {
		var e layout.CIV2
		e.Decode(a.data[uint64(i)*layout.CIV2Size:])
		ci := ChunkInfo{
			UncompressedOffset: e.UncompressedOffset, UncompressedSize: e.UncompressedSize,
			CompressedOffset: e.CompressedOffset, CompressedSize: e.CompressedSize,
			Flags: uint32(e.Flags), Index: i, Compressed: e.Flags&layout.CICompressed != 0,
		}
		if ci.Flags&ciHasCRC32 != 0 {
			ci.CRC32 = uint32(e.Data)
		}
		if ci.Flags&(layout.CIZran|layout.CIBatch|layout.CIEncrypted) != 0 {
			return ci, fmt.Errorf("ci %d: zran/batch/encrypted chunks (flags %#x) are not supported yet", i, ci.Flags)
		}
		if !ci.Compressed && ci.CompressedSize != ci.UncompressedSize {
			return ci, formatErr("ci %d: uncompressed chunk with csize %d != usize %d", i, ci.CompressedSize, ci.UncompressedSize)
		}
		return ci, nil
	}
	var e layout.CIV1
	e.Decode(a.data[uint64(i)*layout.CIV1Size:])
	return ChunkInfo{
		UncompressedOffset: e.UncompressedOffset, UncompressedSize: e.UncompressedSize,
		CompressedOffset: e.CompressedOffset, CompressedSize: e.CompressedSize,
		Index: i, Compressed: e.CompressedSize != e.UncompressedSize,
	}, nil
}
