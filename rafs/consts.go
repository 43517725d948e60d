package rafs

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Super flags (v5 s_flags, v6 extended superblock s_flags).
const (
	flagCompressNone      = 0x1
	flagCompressLZ4       = 0x2
	flagHashBlake3        = 0x4
	flagHashSHA256        = 0x8
	flagExplicitUIDGID    = 0x10
	flagHasXattr          = 0x20
	flagCompressGzip      = 0x40
	flagCompressZstd      = 0x80
	flagInlinedDigest     = 0x100
	flagTarfs             = 0x200
	flagEncryptionNone    = 0x0100_0000
	flagEncryptionAES128  = 0x0200_0000
	flagCompatReserved    = 0xfc00_0000
	knownSuperFlags       = 0x3ff | flagEncryptionNone | flagEncryptionAES128 | flagCompatReserved
	compressionSuperFlags = flagCompressNone | flagCompressLZ4 | flagCompressGzip | flagCompressZstd
	hashSuperFlags        = flagHashBlake3 | flagHashSHA256
)

// flagCompression is the compression algorithm super flags name (LZ4 when
// none is set, as nydus reads v5 images).
func flagCompression(f uint64) Compression {
	switch {
	case f&flagCompressNone != 0:
		return CompressNone
	case f&flagCompressGzip != 0:
		return CompressGzip
	case f&flagCompressZstd != 0:
		return CompressZstd
	}
	return CompressLZ4
}

// flagDigest is the digest algorithm super flags name (BLAKE3 by default).
func flagDigest(f uint64) DigestAlgo {
	if f&flagHashSHA256 != 0 {
		return DigestSHA256
	}
	return DigestBlake3
}

// Blob feature bits.
const (
	blobAligned        = 0x1
	blobInlinedFSMeta  = 0x2
	blobChunkInfoV2    = 0x4
	blobZran           = 0x8
	blobSeparate       = 0x10
	blobInlinedDigest  = 0x20
	blobTarfs          = 0x40
	blobBatch          = 0x80
	blobEncrypted      = 0x100
	blobExternal       = 0x800
	blobHasTarHeader   = 0x1000_0000
	blobHasTOC         = 0x2000_0000
	blobCapTarTOC      = 0x4000_0000
	blobV5NoExtTable   = 0x8000_0000
	blobFeatureLowMask = 0xffff
	blobFeatureLowOK   = 0x0fff
)

// Compression is a chunk compression algorithm.
type Compression uint32

// Compression algorithms, as numbered in blob tables.
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

// DigestAlgo is a chunk digest algorithm.
type DigestAlgo uint32

// Digest algorithms, as numbered in blob tables.
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

// ErrFormat is wrapped by every error about malformed image bytes.
var ErrFormat = errors.New("malformed RAFS image")

// formatErr returns an error wrapping ErrFormat.
func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, args...))
}

// span returns b[off:off+n] after checking that it lies inside b, so that
// no parser ever slices out of range. n may come straight from the image.
func span(b []byte, off, n uint64, what string) ([]byte, error) {
	if off > uint64(len(b)) || n > uint64(len(b))-off {
		return nil, formatErr("%s: range [%d, +%d) is outside the %d-byte buffer", what, off, n, len(b))
	}
	return b[off : off+n], nil
}

var le = binary.LittleEndian

// cstring returns b up to its first NUL.
func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

func isPow2(v uint64) bool { return v != 0 && v&(v-1) == 0 }

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }
