package layout

import (
	"bytes"
	"fmt"
	"strconv"
)

// A v6 blob: chunk data, then metadata sections (blob.meta: the chunk-info
// array and its header; blob.digest: one 32-byte digest per chunk;
// optionally image.boot: the bootstrap), each followed by a 512-byte tar
// header, and last the ToC (128-byte entries) behind a tar header named
// TOCName.
const (
	TarBlockSize    = 512
	TOCEntrySize    = 128
	TOCName         = "rafs.blob.toc"
	BlobMetaMagic   = 0xB10BB10B
	BlobMetaHdrSize = 4096
	CIV1Size        = 16
	CIV2Size        = 24
)

// TOC entry compression flags.
const (
	TOCCompressNone = 0x1
	TOCCompressZstd = 0x2
	TOCCompressLZ4  = 0x4
)

// v2 chunk-info flags.
const (
	CICompressed = 0x01
	CIZran       = 0x02
	CIBatch      = 0x04
	CIEncrypted  = 0x08
	CIHasCRC32   = 0x10
)

// BlobMetaHeader is the 4096-byte blob.meta header
// (BlobCompressionContextHeader) that follows a blob's ci array; its magic
// is at both ends.
type BlobMetaHeader struct {
	Magic            uint32
	Features         uint32
	CICompressor     Compression
	CIEntries        uint32
	CIOffset         uint64
	CICompressedSize uint64
	CIUncompSize     uint64
	ZranOffset       uint64
	ZranSize         uint64
	ZranCount        uint32
	Magic2           uint32
}

func (h *BlobMetaHeader) fields(f *codec) {
	f.u32(0, &h.Magic)
	f.u32(4, &h.Features)
	f.comp(8, &h.CICompressor)
	f.u32(12, &h.CIEntries)
	f.u64(16, &h.CIOffset)
	f.u64(24, &h.CICompressedSize)
	f.u64(32, &h.CIUncompSize)
	f.u64(40, &h.ZranOffset)
	f.u64(48, &h.ZranSize)
	f.u32(56, &h.ZranCount)
	f.u32(4092, &h.Magic2)
}

// Decode reads the structure from b[:BlobMetaHdrSize]; Encode writes it there.
func (h *BlobMetaHeader) Decode(b []byte) { h.fields(&codec{b: b[:BlobMetaHdrSize]}) }
func (h *BlobMetaHeader) Encode(b []byte) { h.fields(&codec{b: b[:BlobMetaHdrSize], enc: true}) }

// CIV1 is a 16-byte v1 chunk-info entry: a 4 KiB-aligned uncompressed
// offset below 2^44 and a compressed offset below 2^40, each with a size
// of 1 to 2^24 bytes stored minus one, split into 20 low and 4 high bits.
type CIV1 struct {
	UncompressedOffset uint64
	UncompressedSize   uint32
	CompressedOffset   uint64
	CompressedSize     uint32
}

// Decode reads the entry from b[:CIV1Size].
func (c *CIV1) Decode(b []byte) {
	_ = b[CIV1Size-1]
	u, z := le.Uint64(b), le.Uint64(b[8:])
	*c = CIV1{
		UncompressedOffset: u & (1<<44 - 1) &^ 0xfff,
		UncompressedSize:   uint32((u>>44)|((u>>8)&0xf)<<20) + 1,
		CompressedOffset:   z & (1<<40 - 1),
		CompressedSize:     uint32((z>>44)|((z>>40)&0xf)<<20) + 1,
	}
}

// Encode writes the entry to b[:CIV1Size].
func (c *CIV1) Encode(b []byte) {
	_ = b[CIV1Size-1]
	us, cs := uint64(c.UncompressedSize-1), uint64(c.CompressedSize-1)
	le.PutUint64(b, c.UncompressedOffset&0xFFF_FFFF_F000|(us>>20&0xf)<<8|(us&0xFFFFF)<<44)
	le.PutUint64(b[8:], c.CompressedOffset&0xFF_FFFF_FFFF|(cs>>20&0xf)<<40|(cs&0xFFFFF)<<44)
}

// CIV2 is a 24-byte v2 chunk-info entry: uncompressed offset / 4096 (32
// bits), size minus one (24 bits) and flags (8 bits); compressed offset
// (40 bits) and size (24 bits); and 8 bytes of data (the CRC32C with
// CIHasCRC32).
type CIV2 struct {
	UncompressedOffset uint64
	UncompressedSize   uint32
	Flags              uint8
	CompressedOffset   uint64
	CompressedSize     uint32
	Data               uint64
}

// Decode reads the entry from b[:CIV2Size].
func (c *CIV2) Decode(b []byte) {
	_ = b[CIV2Size-1]
	u, z := le.Uint64(b), le.Uint64(b[8:])
	*c = CIV2{
		UncompressedOffset: (u & 0xffff_ffff) << 12,
		UncompressedSize:   uint32((u>>32)&0xff_ffff) + 1,
		Flags:              uint8(u >> 56),
		CompressedOffset:   z & (1<<40 - 1),
		CompressedSize:     uint32(z >> 40),
		Data:               le.Uint64(b[16:]),
	}
}

// Encode writes the entry to b[:CIV2Size].
func (c *CIV2) Encode(b []byte) {
	_ = b[CIV2Size-1]
	le.PutUint64(b, (c.UncompressedOffset>>12)&0xffff_ffff|uint64(c.UncompressedSize-1)&0xff_ffff<<32|uint64(c.Flags)<<56)
	le.PutUint64(b[8:], c.CompressedOffset&(1<<40-1)|uint64(c.CompressedSize)<<40)
	le.PutUint64(b[16:], c.Data)
}

// TOCEntry is one 128-byte entry of a blob's table of contents.
type TOCEntry struct {
	Flags            uint32
	Name             string // at most 16 bytes
	SHA256           [32]byte
	CompressedOffset uint64
	CompressedSize   uint64
	UncompressedSize uint64
}

func (e *TOCEntry) fields(f *codec) {
	f.u32(0, &e.Flags)
	f.str(8, 16, &e.Name)
	f.sha(24, &e.SHA256)
	f.u64(56, &e.CompressedOffset)
	f.u64(64, &e.CompressedSize)
	f.u64(72, &e.UncompressedSize)
}

// Decode reads the structure from b[:TOCEntrySize]; Encode writes it there.
func (e *TOCEntry) Decode(b []byte) { e.fields(&codec{b: b[:TOCEntrySize]}) }
func (e *TOCEntry) Encode(b []byte) { e.fields(&codec{b: b[:TOCEntrySize], enc: true}) }

// Compression returns the algorithm the entry's bytes are stored with.
func (e TOCEntry) Compression() (Compression, error) {
	switch e.Flags & 0xf {
	case TOCCompressNone:
		return CompressNone, nil
	case TOCCompressZstd:
		return CompressZstd, nil
	case TOCCompressLZ4:
		return CompressLZ4, nil
	}
	return 0, Errorf("toc entry %q: unknown compression flags %#x", e.Name, e.Flags)
}

// TarHeader is the part of a ustar/GNU tar header the blob sections use.
type TarHeader struct {
	Name string // at most 100 bytes
	Size uint64
}

// Decode reads a 512-byte tar header and checks its checksum.
func (h *TarHeader) Decode(b []byte) error {
	if len(b) != TarBlockSize {
		return Errorf("tar header: %d bytes, want 512", len(b))
	}
	want, err := parseOctal(b[148:156])
	if err != nil || want != tarChecksum(b) {
		return Errorf("tar header: bad checksum")
	}
	size, err := parseOctal(b[124:136])
	if err != nil {
		return Errorf("tar header: size: %v", err)
	}
	*h = TarHeader{Name: CString(b[:100]), Size: size}
	return nil
}

// Encode writes the header as nydus does (GNU: name, size, zero mode and
// mtime, type '0', magic "ustar  ", checksum) to b[:TarBlockSize], which
// must be zeroed.
func (h *TarHeader) Encode(b []byte) {
	_ = b[TarBlockSize-1]
	putString(b[:100], h.Name)
	copy(b[124:136], fmt.Sprintf("%011o", h.Size))
	copy(b[136:148], "00000000000")
	b[156] = '0'
	copy(b[257:265], "ustar  \x00")
	copy(b[148:156], fmt.Sprintf("%07o\x00", tarChecksum(b)))
}

// tarChecksum sums the header's bytes with the checksum field as spaces.
func tarChecksum(b []byte) uint64 {
	var sum uint64
	for i, c := range b {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += uint64(c)
	}
	return sum
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
