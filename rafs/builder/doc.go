// Package builder makes Nydus RAFS images: a bootstrap (metadata) and a
// native data blob, from a directory or an OCI layer tar / tar.gz, the way
// nydus-image create does.
//
// Output:
//   - RAFS v6 bootstraps (EROFS superblock, RAFS extended superblock, device
//     and blob tables, extended inodes, FLAT_PLAIN/FLAT_INLINE directories,
//     inline xattrs, chunk-index arrays, chunk table) that both nydusd and
//     the Linux EROFS driver accept; RAFS v5 bootstraps on request.
//   - native blobs as nydus >= 2.2 writes them: chunk data, the blob.meta
//     chunk-info array and header, the blob.digest array and the ToC, each
//     section followed by its "reverse tar" header, named by the blob id
//     nydus computes (sha256 of the file without the raw digest array).
//
// Uncompressed blobs keep every chunk at its 4 KiB-aligned uncompressed
// offset (compressed offset == uncompressed offset), so the raw blob file is
// itself the "data image" the kernel reads through the device table: an
// image built with --compressor none mounts with
// `mount -t erofs -o device=BLOB BOOTSTRAP`.
//
// Builds are reproducible: entries are sorted, chunks are assigned in a
// fixed order even though hashing and compression run on several cores, and
// no wall-clock value is written. Outputs go to temporary files that are
// renamed into place only when the whole build succeeded.
//
// The on-disk structures are written by hand because no Go library writes
// RAFS; the layout follows shared/docs/rafs-format.md. Compression uses
// pierrec/lz4/v4 (raw blocks) and klauspost/compress/zstd, digests
// lukechampine.com/blake3 and crypto/sha256, tar parsing archive/tar.
package builder
