package builder

import (
	"context"
	"fmt"
	"path"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/layout"
)

// parentImage is what a layered build takes from the layer below.
type parentImage struct {
	root   *inode
	blobs  []blobInfo
	chunks map[[32]byte]chunkRef // for dedup
}

// Blob features a parent's blob may not have: the builder copies blob
// table entries field by field, and these need fields it does not keep
// (separate meta, ZRAN, batch, encryption, external blobs) or name the
// blob in a way that does not survive layering (an inline bootstrap's
// placeholder id, which nydusd resolves by the bootstrap's file name).
const parentBlobUnsupported = layout.BlobInlinedFSMeta | layout.BlobZran | layout.BlobSeparate |
	layout.BlobTarfs | layout.BlobBatch | layout.BlobEncrypted | layout.BlobExternal

// loadParent reads the parent bootstrap through the rafs reader, from the
// bootstrap alone (no blob is opened), and checks that a layer built with
// opts can go on top of it.
func loadParent(ctx context.Context, p string, opts *Options) (*parentImage, error) {
	// The owners the parent records are kept even when it lacks
	// EXPLICIT_UID_GID (old nydus-image builds), as nydus-image keeps them.
	img, err := rafs.Open(p, rafs.Options{RecordedOwners: true, ChunkCacheSize: -1})
	if err != nil {
		return nil, fmt.Errorf("parent bootstrap: %w", err)
	}
	defer img.Close()
	pi, err := parentFrom(ctx, img, opts)
	if err != nil {
		return nil, fmt.Errorf("parent bootstrap %s: %w", p, err)
	}
	return pi, nil
}

// loadChunkDict reads a chunk dictionary: a bootstrap read as a parent
// (the same settings must match), of which the blobs and chunks are used.
func loadChunkDict(ctx context.Context, p string, opts *Options) (*parentImage, error) {
	d, err := loadParent(ctx, p, opts)
	if err != nil {
		return nil, fmt.Errorf("chunk dict: %w", err)
	}
	return d, nil
}

// parentFrom checks the parent's settings against opts, as nydus-image
// does (same RAFS version, chunk size and digester; for v5, whose super
// flags name one compressor for every blob, the same compressor), and
// converts its blob table and tree.
func parentFrom(ctx context.Context, img *rafs.Image, opts *Options) (*parentImage, error) {
	return imageTree(ctx, img, opts, parentBlobUnsupported)
}

// imageTree is parentFrom refusing blobs with any of the features in
// refused (merging accepts per-layer blobs with an inlined bootstrap).
func imageTree(ctx context.Context, img *rafs.Image, opts *Options, refused uint32) (*parentImage, error) {
	s := img.Super()
	switch {
	case s.PlainEROFS || s.Tarfs:
		return nil, fmt.Errorf("a tarfs or plain EROFS image cannot be a parent")
	case s.Version != opts.FsVersion:
		return nil, fmt.Errorf("the parent is RAFS v%d and the layer v%d: build the layer with --fs-version %d (nydus-image requires the parent's version)",
			s.Version, opts.FsVersion, s.Version)
	case s.ChunkSize != opts.ChunkSize:
		return nil, fmt.Errorf("chunk size %#x differs from the parent's %#x", opts.ChunkSize, s.ChunkSize)
	case s.Digest != digesterAlgo(opts.Digester):
		return nil, fmt.Errorf("digester %s differs from the parent's %s", opts.Digester, s.Digest)
	case s.Version == 5 && s.Compression != compressorAlgo(opts.Compressor):
		return nil, fmt.Errorf("compressor %s differs from the parent's %s (RAFS v5 names one compressor for all blobs)", opts.Compressor, s.Compression)
	}
	pi := &parentImage{chunks: map[[32]byte]chunkRef{}}
	for i, b := range img.Blobs() {
		if b.Features&refused != 0 {
			return nil, fmt.Errorf("blob %d (%s) has features %#x, which layered builds do not support", i, b.ID, b.Features)
		}
		if s.Version == 6 && b.ChunkCount > 0 && b.UncompressedSize == 0 {
			// The reader maps a v6 blob by its device slot; re-encoded,
			// its blocks come from this size, and a slot of 0 blocks
			// does not open.
			return nil, fmt.Errorf("blob %d (%s) has %d chunks and an uncompressed size of 0", i, b.ID, b.ChunkCount)
		}
		pi.blobs = append(pi.blobs, blobInfo{ID: b.ID, ChunkCount: b.ChunkCount, Compressor: b.Compression,
			Digester: b.Digest, Features: b.Features, CompressedSize: b.CompressedSize,
			UncompressedSize: b.UncompressedSize, TOCSize: b.TOCSize, TOCDigest: b.TOCDigest,
			CICompressor: b.CICompression, CIOffset: b.CIOffset, CICompressedSize: b.CICompressedSize,
			CIUncompressed: b.CIUncompressedSize})
	}
	if len(pi.blobs) >= 255 {
		return nil, fmt.Errorf("the parent already has %d blobs; RAFS chunk addresses allow 255", len(pi.blobs))
	}
	dirs := map[string]*inode{}
	files := map[uint64]*inode{} // by inode number: hard links share one
	err := img.Walk(func(p string, n *rafs.Inode) error {
		if p == "/" {
			root, err := convertInode(ctx, img, n, s.ChunkSize)
			pi.root, dirs[p] = root, root
			return err
		}
		dir := dirs[path.Dir(p)]
		if dir == nil {
			return fmt.Errorf("%s: bad entry name", p)
		}
		x := files[n.Ino]
		if x == nil {
			var err error
			if x, err = convertInode(ctx, img, n, s.ChunkSize); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if n.IsDir() {
				dirs[p] = x
			} else {
				files[n.Ino] = x
			}
		}
		dir.setChild(path.Base(p), x)
		for _, c := range x.Chunks {
			if _, ok := pi.chunks[c.Digest]; !ok {
				pi.chunks[c.Digest] = c
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return pi, nil
}

// convertInode turns a reader inode into a tree inode (without children).
func convertInode(ctx context.Context, img *rafs.Image, n *rafs.Inode, chunkSize uint32) (*inode, error) {
	x := &inode{Mode: n.Mode, UID: n.UID, GID: n.GID, Mtime: int64(n.Mtime), MtimeNsec: n.MtimeNsec, Size: n.Size}
	xs, err := img.Xattrs(n.Ino)
	if err != nil {
		return nil, err
	}
	for _, a := range xs {
		x.Xattrs = append(x.Xattrs, xattr{Name: a.Name, Value: a.Value})
	}
	if err := checkXattrs(x.Xattrs); err != nil {
		return nil, err
	}
	switch x.Mode & modeTypeMask {
	case modeLnk:
		t, err := img.Readlink(n.Ino)
		if err != nil {
			return nil, err
		}
		x.Target = string(t)
	case modeChr, modeBlk:
		x.Rdev = uint64(n.Rdev)
	case modeReg:
		cs := uint64(chunkSize)
		err := img.Chunks(ctx, n.Ino, func(c rafs.Chunk) error {
			k := uint64(len(x.Chunks))
			switch {
			case c.Hole || !c.HasDigest:
				return fmt.Errorf("chunk %d has no digest to deduplicate by", k)
			case c.FileOffset != k*cs || uint64(c.UncompressedSize) != min(cs, n.Size-c.FileOffset):
				return fmt.Errorf("chunk %d covers [%d, +%d), not chunk %d of the file (a sparse v5 file?)", k, c.FileOffset, c.UncompressedSize, k)
			}
			x.Chunks = append(x.Chunks, chunkRef{Digest: c.Digest, BlobIndex: c.BlobIndex, CI: c.Index,
				UOff: c.UncompressedOffset, USize: c.UncompressedSize, COff: c.CompressedOffset,
				CSize: c.CompressedSize, Compressed: c.Compressed})
			return nil
		})
		if err != nil {
			return nil, err
		}
		if uint64(len(x.Chunks))*cs < n.Size {
			return nil, fmt.Errorf("%d chunks for %d bytes", len(x.Chunks), n.Size)
		}
	}
	return x, nil
}
