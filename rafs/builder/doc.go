// Package builder makes Nydus RAFS images: a bootstrap (metadata) and a
// data blob, from a directory or an OCI layer tar / tar.gz, the way
// nydus-image create does.
//
// Entry points:
//   - Build(ctx, source, bootstrapPath, blobDir, Options) builds one layer
//     (optionally on a parent bootstrap) and reports what it wrote.
//   - BuildDir(src, outDir, Options) is the short form for tests: bootstrap
//     outDir/image.boot, blob outDir/<blob id>.
//   - ExportBlock(bootstrap, blobDir, out) writes the flat block-device view
//     (nydus-image export --block) that the kernel mounts as one device.
//
// Output:
//   - RAFS v6 bootstraps (EROFS superblock, RAFS extended superblock, device
//     and blob tables, extended inodes, FLAT_PLAIN/FLAT_INLINE directories
//     with sorted dirents, inline xattrs, chunk-index arrays, chunk table,
//     prefetch table) that nydusd, our rafs reader and the Linux EROFS
//     driver accept; RAFS v5 bootstraps (inode table, Merkle digests, v5
//     blob tables) with --fs-version 5.
//   - v6 blobs as nydus >= 2.2 writes them: chunk data, the blob.meta
//     chunk-info array and header, the blob.digest array, optionally the
//     bootstrap (image.boot, zstd) and the ToC, each section followed by its
//     "reverse tar" header, named by the blob id nydus computes (sha256 of
//     the file without the raw digest array). v5 blobs are chunk data only,
//     named by their sha256.
//
// The kernel and uncompressed blobs: with --compressor none every chunk
// sits at its 4 KiB-aligned uncompressed offset (compressed offset ==
// uncompressed offset; the gaps are zeros), so the raw blob file is itself
// the data image the kernel reads through the device table, and the image
// mounts with `mount -t erofs -o device=BLOB BOOTSTRAP`. The chunk index
// addresses device blob_index+1 at block uoff/4096, and mapped_blkaddr
// (after the bootstrap, 512 KiB aligned) is only used by the flat view.
//
// Layers: the source's entries, OCI whiteouts (.wh.NAME) and opaque markers
// (.wh..wh..opq), or with WhiteoutSpec "overlayfs" an overlayfs upper
// directory's 0/0 character devices and trusted.overlay.opaque=y, are
// applied onto the parent bootstrap's tree, and chunks
// already stored in the parent's blobs are referenced instead of stored
// again. The merged tree is written as a whole; the parent's blobs stay in
// the blob table before the new one. The parent is read through the rafs
// reader (Super, Blobs, Walk, Chunks), from its bootstrap alone, so any
// image the reader opens can be a parent, v6 or v5. As nydus-image
// requires, the layer must have the parent's RAFS version, chunk size and
// digester (and, in v5, where the super flags name one compressor for all
// blobs, its compressor); the owners a parent records are kept even when
// it lacks EXPLICIT_UID_GID. Parents whose blobs are ZRAN, batch,
// encrypted, separate-meta, external or carry an inline bootstrap are
// refused.
//
// A chunk dictionary (Options.ChunkDict, nydus-image --chunk-dict) is a
// bootstrap read the same way, of which only the blobs and chunks are
// used: its blobs come first in the blob table and its chunks are
// referenced, not stored again; Merge, given the same dictionary, keeps
// them first in the merged table.
//
// Builds are reproducible: entries are sorted, chunks are hashed and
// compressed on several goroutines but placed in a fixed order (the order
// nydus-image uses: a directory's entries, then its subdirectories), and no
// wall-clock value is written. Outputs go to temporary files that are
// renamed into place only when the whole build succeeded.
//
// Hand-written parts, and why: no Go library writes RAFS or EROFS, so the
// on-disk structures are encoded with rafs/layout, the definitions the
// reader decodes with (docs/rafs-format.md describes them). Nothing here
// parses RAFS: parent bootstraps and ExportBlock's input are read with the
// rafs reader, and tests read every build back through it. Compression uses
// pierrec/lz4/v4 (raw blocks) and klauspost/compress/zstd, digests
// lukechampine.com/blake3 and crypto/sha256, tar parsing archive/tar.
package builder
