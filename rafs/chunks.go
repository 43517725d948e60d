package rafs

import (
	"context"
	"fmt"
	"syscall"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/layout"
)

// SuperInfo holds the image-wide settings of the superblock: what a
// builder layering a new image on this one must agree with.
type SuperInfo struct {
	Version   int    // 5 or 6
	Flags     uint64 // raw super flags (v5 s_flags, v6 extended superblock)
	ChunkSize uint32 // 0 for plain EROFS images
	// Compression and Digest are the algorithms the super flags name.
	// v5 has no per-blob algorithms: they apply to every blob.
	Compression Compression
	Digest      DigestAlgo
	// ExplicitUIDGID is set when the image's owners are to be used;
	// without it every inode is reported with Options.UID/GID (unless
	// Options.RecordedOwners).
	ExplicitUIDGID bool
	// Tarfs images keep chunk data raw in tar blobs, at 512-byte blocks.
	Tarfs bool
	// PlainEROFS is an EROFS image that is not RAFS (Options.AllowPlainEROFS).
	PlainEROFS bool
}

// Super describes the image's superblock settings.
func (img *Image) Super() SuperInfo {
	flags := img.f.superFlags()
	s := SuperInfo{Version: img.f.version(), Flags: flags, Compression: layout.FlagCompression(flags),
		Digest: layout.FlagDigest(flags), ExplicitUIDGID: flags&flagExplicitUIDGID != 0, Tarfs: flags&flagTarfs != 0}
	switch m := img.f.(type) {
	case *v5:
		s.ChunkSize = uint32(m.chunkSize)
	case *v6:
		s.ChunkSize = uint32(m.chunkSize)
		if !m.rafs {
			s.PlainEROFS, s.Compression = true, CompressNone
		}
	}
	return s
}

// Chunk is one chunk of a regular file: the file range it covers and
// where its bytes are stored.
type Chunk struct {
	// FileOffset is where the chunk starts in the file. Chunks are
	// contiguous (chunk k at k × chunk size) except in v5 files with
	// holes.
	FileOffset uint64
	// BlobIndex is the chunk's blob, an index into Blobs().
	BlobIndex uint32
	// Hole marks a plain EROFS null address: zeros, no stored bytes.
	Hole bool
	// ChunkInfo locates the bytes in the blob: compressed and
	// uncompressed offset and size, whether they are compressed, the
	// chunk's index in the blob (the v6 ci index; the uncompressed offset
	// is the chunk index entry's block address) and its digest.
	ChunkInfo
}

// Chunks calls fn for each chunk of regular file ino, in file order,
// until fn returns an error (which Chunks returns). Nothing is read from
// the blobs unless Options.Backend is set: a RAFS v6 chunk's info then
// comes from its blob's chunk-info and digest arrays, and otherwise from
// the bootstrap's chunk table (a chunk found in neither is an error). v5
// chunk records carry their info. Like every other call, it checks each
// entry against the image before using it.
//
// A file that is not regular is syscall.EINVAL. A plain EROFS file whose
// data sits in the image itself rather than in a blob is an error.
func (img *Image) Chunks(ctx context.Context, ino uint64, fn func(Chunk) error) error {
	n, err := img.Inode(ino)
	if err != nil {
		return err
	}
	if !n.IsRegular() {
		return fmt.Errorf("inode %d: not a regular file: %w", ino, syscall.EINVAL)
	}
	if img.f.version() == 6 && n.v6.layout != layout.LayoutChunkBased {
		if n.Size == 0 {
			return nil
		}
		return fmt.Errorf("inode %d: data stored in the image (flat layout), not in chunks", ino)
	}
	return img.f.chunks(n, 0, n.Size, func(c chunkRef) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if c.primary {
			return fmt.Errorf("inode %d: chunk at %d is stored in the image, not in a blob", ino, c.fileOff)
		}
		if !c.hole {
			if err := img.resolve(ctx, &c); err != nil {
				return fmt.Errorf("inode %d chunk at %d: %w", ino, c.fileOff, err)
			}
			if err := img.checkInBlob(&c); err != nil {
				return fmt.Errorf("inode %d chunk at %d: %w", ino, c.fileOff, err)
			}
		}
		return fn(Chunk{FileOffset: c.fileOff, BlobIndex: c.blob, Hole: c.hole, ChunkInfo: c.ci})
	})
}

// checkInBlob checks that a resolved chunk lies inside its blob, as far as
// the blob table records the blob's size and chunk count.
func (img *Image) checkInBlob(c *chunkRef) error {
	b := img.blobs[c.blob]
	if b.compressedSize != 0 && (c.ci.CompressedOffset > b.compressedSize || uint64(c.ci.CompressedSize) > b.compressedSize-c.ci.CompressedOffset) {
		return formatErr("blob %s: chunk [%#x, +%d) ends past the blob's %d bytes", b.id, c.ci.CompressedOffset, c.ci.CompressedSize, b.compressedSize)
	}
	if c.needCI && b.chunkCount != 0 && c.ciIndex >= b.chunkCount {
		return formatErr("blob %s: ci index %d of %d chunks", b.id, c.ciIndex, b.chunkCount)
	}
	return nil
}
