package rafs

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"strconv"
)

// TOC entry compression flags.
const (
	tocCompressNone = 0x1
	tocCompressZstd = 0x2
	tocCompressLZ4  = 0x4
)

const (
	tarBlockSize     = 512
	tocEntrySize     = 128
	tocName          = "rafs.blob.toc"
	blobMetaMagic    = 0xB10BB10B
	blobMetaHdrSize  = 4096
	ciV1Size         = 16
	ciV2Size         = 24
	maxChunkCount    = 1 << 24
	maxChunkSize     = 16 << 20
	maxTOCSize       = 1 << 20
	maxBootstrapSize = 1 << 31
)

// TOCEntry is one entry of a blob's table of contents (rafs.blob.toc).
type TOCEntry struct {
	Flags            uint32
	Name             string
	SHA256           [32]byte
	CompressedOffset uint64
	CompressedSize   uint64
	UncompressedSize uint64
}

// Compression returns the algorithm the entry's bytes are stored with.
func (e TOCEntry) Compression() (Compression, error) {
	switch e.Flags & 0xf {
	case tocCompressNone:
		return CompressNone, nil
	case tocCompressZstd:
		return CompressZstd, nil
	case tocCompressLZ4:
		return CompressLZ4, nil
	}
	return 0, formatErr("toc entry %q: unknown compression flags %#x", e.Name, e.Flags)
}

// tarHeader is the part of a ustar/GNU header the blob sections use.
type tarHeader struct {
	name string
	size uint64
}

// parseTarHeader decodes a 512-byte tar header and checks its checksum.
func parseTarHeader(b []byte) (tarHeader, error) {
	if len(b) != tarBlockSize {
		return tarHeader{}, formatErr("tar header: %d bytes, want 512", len(b))
	}
	var sum uint64
	for i, c := range b {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += uint64(c)
	}
	want, err := parseOctal(b[148:156])
	if err != nil || want != sum {
		return tarHeader{}, formatErr("tar header: bad checksum")
	}
	size, err := parseOctal(b[124:136])
	if err != nil {
		return tarHeader{}, formatErr("tar header: size: %v", err)
	}
	return tarHeader{name: cstring(b[:100]), size: size}, nil
}

// parseOctal decodes a tar numeric field: octal digits padded with spaces
// or NULs, or GNU base-256 when the top bit of the first byte is set.
func parseOctal(b []byte) (uint64, error) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		var v uint64
		for i, c := range b {
			if i == 0 {
				c &= 0x7f
			}
			if v>>56 != 0 {
				return 0, fmt.Errorf("base-256 number overflows")
			}
			v = v<<8 | uint64(c)
		}
		return v, nil
	}
	s := string(bytes.Trim(b, " \x00"))
	if s == "" {
		return 0, nil
	}
	return strconv.ParseUint(s, 8, 63)
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
	if hdr.name != tocName {
		return nil, 0, digest, formatErr("toc: tar header names %q, want %q", hdr.name, tocName)
	}
	if hdr.size%tocEntrySize != 0 || hdr.size > maxTOCSize || hdr.size > uint64(len(tail)-tarBlockSize) {
		return nil, 0, digest, formatErr("toc: bad size %d (have %d bytes)", hdr.size, len(tail)-tarBlockSize)
	}
	raw := tail[uint64(len(tail))-tarBlockSize-hdr.size:]
	for off := 0; off+tocEntrySize <= len(raw)-tarBlockSize; off += tocEntrySize {
		b := raw[off : off+tocEntrySize]
		e := TOCEntry{
			Flags:            le.Uint32(b[0:]),
			Name:             cstring(b[8:24]),
			CompressedOffset: le.Uint64(b[56:]),
			CompressedSize:   le.Uint64(b[64:]),
			UncompressedSize: le.Uint64(b[72:]),
		}
		copy(e.SHA256[:], b[24:56])
		entries = append(entries, e)
	}
	return entries, uint64(len(raw)), sha256.Sum256(raw), nil
}

// BlobMetaHeader is the 4096-byte blob.meta header
// (BlobCompressionContextHeader) that follows a blob's ci array.
type BlobMetaHeader struct {
	Features         uint32
	CICompressor     Compression
	CIEntries        uint32
	CIOffset         uint64
	CICompressedSize uint64
	CIUncompSize     uint64
	ZranOffset       uint64
	ZranSize         uint64
	ZranCount        uint32
}

// ParseBlobMetaHeader decodes and checks a blob.meta header.
func ParseBlobMetaHeader(b []byte) (*BlobMetaHeader, error) {
	if len(b) != blobMetaHdrSize {
		return nil, formatErr("blob.meta header: %d bytes, want 4096", len(b))
	}
	if le.Uint32(b[0:]) != blobMetaMagic || le.Uint32(b[4092:]) != blobMetaMagic {
		return nil, formatErr("blob.meta header: bad magic %#x/%#x", le.Uint32(b[0:]), le.Uint32(b[4092:]))
	}
	h := &BlobMetaHeader{
		Features:         le.Uint32(b[4:]),
		CICompressor:     Compression(le.Uint32(b[8:])),
		CIEntries:        le.Uint32(b[12:]),
		CIOffset:         le.Uint64(b[16:]),
		CICompressedSize: le.Uint64(b[24:]),
		CIUncompSize:     le.Uint64(b[32:]),
		ZranOffset:       le.Uint64(b[40:]),
		ZranSize:         le.Uint64(b[48:]),
		ZranCount:        le.Uint32(b[56:]),
	}
	if h.CIEntries > maxChunkCount {
		return nil, formatErr("blob.meta header: %d entries", h.CIEntries)
	}
	if h.CICompressedSize > h.CIUncompSize {
		return nil, formatErr("blob.meta header: ci compressed size %d > uncompressed %d", h.CICompressedSize, h.CIUncompSize)
	}
	return h, nil
}

// entrySize is the size of one ci entry for these features.
func ciEntrySize(features uint32) uint64 {
	if features&blobChunkInfoV2 != 0 {
		return ciV2Size
	}
	return ciV1Size
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

// v2 ci flags.
const (
	ciCompressed = 0x01
	ciZran       = 0x02
	ciBatch      = 0x04
	ciEncrypted  = 0x08
	ciHasCRC32   = 0x10
)

// CIArray is a decoded-on-demand blob.meta chunk-info array.
type CIArray struct {
	data []byte
	v2   bool
	n    uint32
}

// NewCIArray wraps the uncompressed ci data of a blob with count entries;
// v2 selects 24-byte entries.
func NewCIArray(data []byte, count uint32, v2 bool) (*CIArray, error) {
	es := uint64(ciV1Size)
	if v2 {
		es = ciV2Size
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
		b := a.data[uint64(i)*ciV2Size:]
		u, c, d := le.Uint64(b), le.Uint64(b[8:]), le.Uint64(b[16:])
		ci := ChunkInfo{
			UncompressedOffset: (u & 0xffff_ffff) << 12,
			UncompressedSize:   uint32((u>>32)&0xff_ffff) + 1,
			Flags:              uint32(u >> 56),
			CompressedOffset:   c & (1<<40 - 1),
			CompressedSize:     uint32(c >> 40),
			Index:              i,
		}
		ci.Compressed = ci.Flags&ciCompressed != 0
		if ci.Flags&ciHasCRC32 != 0 {
			ci.CRC32 = uint32(d)
		}
		if ci.Flags&(ciZran|ciBatch|ciEncrypted) != 0 {
			return ci, fmt.Errorf("ci %d: zran/batch/encrypted chunks (flags %#x) are not supported yet", i, ci.Flags)
		}
		if !ci.Compressed && ci.CompressedSize != ci.UncompressedSize {
			return ci, formatErr("ci %d: uncompressed chunk with csize %d != usize %d", i, ci.CompressedSize, ci.UncompressedSize)
		}
		return ci, nil
	}
	b := a.data[uint64(i)*ciV1Size:]
	u, c := le.Uint64(b), le.Uint64(b[8:])
	ci := ChunkInfo{
		UncompressedOffset: u & (1<<44 - 1) &^ 0xfff,
		UncompressedSize:   uint32((u>>44)|((u>>8)&0xf)<<20) + 1,
		CompressedOffset:   c & (1<<40 - 1),
		CompressedSize:     uint32((c>>44)|((c>>40)&0xf)<<20) + 1,
		Index:              i,
	}
	ci.Compressed = ci.CompressedSize != ci.UncompressedSize
	return ci, nil
}
