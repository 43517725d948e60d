package layout

import (
	"encoding/binary"
	"errors"
	"fmt"
)

var le = binary.LittleEndian

// ErrFormat is wrapped by every error about malformed image bytes.
var ErrFormat = errors.New("malformed RAFS image")

// Errorf returns an error wrapping ErrFormat.
func Errorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, args...))
}

// BlockSize is the RAFS v6 block size (and the alignment of v6 chunk data).
const BlockSize = 4096

// Super flags: v5 s_flags and the v6 extended superblock's s_flags.
const (
	FlagCompressNone   = 0x1
	FlagCompressLZ4    = 0x2
	FlagHashBlake3     = 0x4
	FlagHashSHA256     = 0x8
	FlagExplicitUIDGID = 0x10
	FlagHasXattr       = 0x20
	FlagCompressGzip   = 0x40
	FlagCompressZstd   = 0x80
	FlagInlinedDigest  = 0x100
	FlagTarfs          = 0x200
	FlagEncryptionNone = 0x0100_0000
	FlagEncryptionAES  = 0x0200_0000
	FlagCompatReserved = 0xfc00_0000

	KnownSuperFlags       = 0x3ff | FlagEncryptionNone | FlagEncryptionAES | FlagCompatReserved
	CompressionSuperFlags = FlagCompressNone | FlagCompressLZ4 | FlagCompressGzip | FlagCompressZstd
	HashSuperFlags        = FlagHashBlake3 | FlagHashSHA256
)

// Blob feature bits (v6 blob table, blob.meta header, v5 extended blob table).
const (
	BlobAligned       = 0x1
	BlobInlinedFSMeta = 0x2
	BlobChunkInfoV2   = 0x4
	BlobZran          = 0x8
	BlobSeparate      = 0x10
	BlobInlinedDigest = 0x20
	BlobTarfs         = 0x40
	BlobBatch         = 0x80
	BlobEncrypted     = 0x100
	BlobExternal      = 0x800
	BlobHasTarHeader  = 0x1000_0000
	BlobHasTOC        = 0x2000_0000
	BlobCapTarTOC     = 0x4000_0000
	// BlobV5NoExtTable is not stored: the reader marks a v5 blob that has
	// no extended blob table entry with it.
	BlobV5NoExtTable = 0x8000_0000
	// The low 16 bits are features; those above 0x0fff are unknown.
	BlobFeatureLowMask = 0xffff
	BlobFeatureLowOK   = 0x0fff
)

// Compression is a chunk compression algorithm, as numbered in blob tables
// and blob.meta headers.
type Compression uint32

// Compression algorithms.
const (
	CompressNone Compression = 0
	CompressLZ4  Compression = 1
	CompressGzip Compression = 2
	CompressZstd Compression = 3
)

func (c Compression) String() string {
	switch c {
	case CompressNone:
		return "none"
	case CompressLZ4:
		return "lz4_block"
	case CompressGzip:
		return "gzip"
	case CompressZstd:
		return "zstd"
	}
	return fmt.Sprintf("compression(%d)", uint32(c))
}

// compressionFlags are the super flags naming each algorithm.
var compressionFlags = [...]uint64{CompressNone: FlagCompressNone, CompressLZ4: FlagCompressLZ4,
	CompressGzip: FlagCompressGzip, CompressZstd: FlagCompressZstd}

// SuperFlag is the super flag naming c (none for an unknown c).
func (c Compression) SuperFlag() uint64 {
	if int(c) < len(compressionFlags) {
		return compressionFlags[c]
	}
	return FlagCompressNone
}

// FlagCompression is the algorithm super flags f name (LZ4 when none is
// set, as nydus reads v5 images).
func FlagCompression(f uint64) Compression {
	for _, c := range [...]Compression{CompressNone, CompressGzip, CompressZstd} {
		if f&compressionFlags[c] != 0 {
			return c
		}
	}
	return CompressLZ4
}

// DigestAlgo is a chunk digest algorithm, as numbered in blob tables.
type DigestAlgo uint32

// Digest algorithms.
const (
	DigestBlake3 DigestAlgo = 0
	DigestSHA256 DigestAlgo = 1
)

func (d DigestAlgo) String() string {
	switch d {
	case DigestBlake3:
		return "blake3"
	case DigestSHA256:
		return "sha256"
	}
	return fmt.Sprintf("digest(%d)", uint32(d))
}

// SuperFlag is the super flag naming d.
func (d DigestAlgo) SuperFlag() uint64 {
	if d == DigestSHA256 {
		return FlagHashSHA256
	}
	return FlagHashBlake3
}

// FlagDigest is the algorithm super flags f name (BLAKE3 by default).
func FlagDigest(f uint64) DigestAlgo {
	if f&FlagHashSHA256 != 0 {
		return DigestSHA256
	}
	return DigestBlake3
}

// CString returns b up to its first NUL.
func CString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// putString writes s into the fixed-size field b, NUL-padded (the caller
// clears b; a longer s is cut).
func putString(b []byte, s string) { copy(b, s) }

// AlignUp rounds v up to a multiple of a, a power of two.
func AlignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

// DecodePrefetch decodes a prefetch table: u32 inode numbers (v6 nids, v5
// inode-table indexes), ending at the first 0 or at the end of b.
func DecodePrefetch(b []byte) []uint32 {
	var out []uint32
	for i := 0; i+4 <= len(b); i += 4 {
		v := le.Uint32(b[i:])
		if v == 0 {
			break
		}
		out = append(out, v)
	}
	return out
}

// EncodePrefetch writes ids as a prefetch table at the start of b.
func EncodePrefetch(b []byte, ids []uint32) {
	for i, v := range ids {
		le.PutUint32(b[4*i:], v)
	}
}
