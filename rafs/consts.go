package rafs

import (
	"encoding/binary"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/layout"
)

// The on-disk format lives in package layout; these are the names the
// reader's files use for it.

// Compression is a chunk compression algorithm, as numbered in blob tables.
type Compression = layout.Compression

// Compression algorithms.
const (
	CompressNone = layout.CompressNone
	CompressLZ4  = layout.CompressLZ4
	CompressGzip = layout.CompressGzip
	CompressZstd = layout.CompressZstd
)

// DigestAlgo is a chunk digest algorithm, as numbered in blob tables.
type DigestAlgo = layout.DigestAlgo

// Digest algorithms.
const (
	DigestBlake3 = layout.DigestBlake3
	DigestSHA256 = layout.DigestSHA256
)

// TOCEntry is one entry of a blob's table of contents (rafs.blob.toc).
type TOCEntry = layout.TOCEntry

// ErrFormat is wrapped by every error about malformed image bytes.
var ErrFormat = layout.ErrFormat

// formatErr returns an error wrapping ErrFormat.
var formatErr = layout.Errorf

// Super flags and blob features the reader's files test.
const (
	flagExplicitUIDGID = layout.FlagExplicitUIDGID
	flagHasXattr       = layout.FlagHasXattr
	flagTarfs          = layout.FlagTarfs

	blobInlinedFSMeta = layout.BlobInlinedFSMeta
	blobChunkInfoV2   = layout.BlobChunkInfoV2
	blobZran          = layout.BlobZran
	blobSeparate      = layout.BlobSeparate
	blobInlinedDigest = layout.BlobInlinedDigest
	blobBatch         = layout.BlobBatch
	blobEncrypted     = layout.BlobEncrypted
	blobExternal      = layout.BlobExternal
	blobHasTOC        = layout.BlobHasTOC
	blobCapTarTOC     = layout.BlobCapTarTOC

	ciHasCRC32      = layout.CIHasCRC32
	tarBlockSize    = layout.TarBlockSize
	tocEntrySize    = layout.TOCEntrySize
	blobMetaHdrSize = layout.BlobMetaHdrSize
	chunkInfoV5Size = layout.ChunkInfoV5Size
)

// Limits the reader puts on values read from an image, so that a crafted
// image never makes it allocate or loop much more than the image's size.
const (
	maxBlobs         = 256
	maxNameLen       = layout.MaxNameLen
	maxSymlinkLen    = 4096
	maxChunkCount    = 1 << 24
	maxChunkSize     = 16 << 20
	maxTOCSize       = 1 << 20
	maxBootstrapSize = 1 << 31
)

// checkSuperFlags applies the loaders' flag rules.
func checkSuperFlags(f uint64, v6 bool) error {
	if f&^uint64(layout.KnownSuperFlags) != 0 {
		return formatErr("unknown super flags %#x", f&^uint64(layout.KnownSuperFlags))
	}
	if v6 {
		if c := f & layout.CompressionSuperFlags; !isPow2(c) {
			return formatErr("super flags %#x: need exactly one compression bit", f)
		}
		if h := f & layout.HashSuperFlags; !isPow2(h) {
			return formatErr("super flags %#x: need exactly one hash bit", f)
		}
	}
	return nil
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

func isPow2(v uint64) bool { return v != 0 && v&(v-1) == 0 }

var alignUp = layout.AlignUp
