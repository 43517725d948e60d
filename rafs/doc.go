// Package rafs reads Nydus RAFS v5 and v6 images and serves them as a
// read-only go-fuse fuse.RawFileSystem.
//
// # Opening
//
// Open maps a bootstrap (or a data blob that carries its bootstrap inline,
// found through the blob's ToC) and decodes nothing but the superblock and
// the blob table: inodes, directories, xattrs and chunk indexes are
// decoded from the mapping on demand, so opening a 100,000-inode image
// costs a few system calls and no per-inode memory. Blob data comes from a
// backend.Backend (Options.Backend) through the storage layer
// (Options.Cache: the daemon's blob cache).
//
//	img, err := rafs.Open("image.boot", rafs.Options{
//		Backend:        backend.NewLocalFS("/var/lib/nydus/blobs"),
//		DigestValidate: true,
//	})
//	fs := rafs.NewFS(img, rafs.FSOptions{})   // a fuse.RawFileSystem
//	srv, err := hostmount.Mount(fs, "/mnt", nil) // or hand fs to fusewire
//
// # For builders
//
// A builder layering a new image on this one (rafs/builder with a parent
// bootstrap) reads it through the same calls: Super for the image-wide
// settings, Blobs for the blob table (and v6 device slots), Walk, Xattrs
// and Readlink for the tree, and Chunks for each regular file's chunks
// (blob index, compressed and uncompressed offset and size, compression,
// ci index, digest). Like everything else they decode lazily and check
// every value against the image.
//
// # What is supported
//
// v6: the EROFS superblock and RAFS extension, device and blob tables,
// compact and extended inodes, FLAT_PLAIN/FLAT_INLINE directories and
// symlinks, inline (and, for plain EROFS, shared) xattrs, chunk index
// arrays, the bootstrap chunk table (used when a blob lacks its ci array),
// the prefetch table; old images whose hard links are separate inodes
// with one i_ino report one inode number (the smallest nid). Plain EROFS
// images with chunk-based files on extra devices open with
// Options.AllowPlainEROFS. v5: superblock, inode table, prefetch table,
// blob table with or without the extended table, inode records with
// names, symlinks, xattrs and chunks; Check verifies the inode digests.
// Blobs: raw chunk data, blob.meta ci arrays (v1 and v2), the ToC and the
// blob.digest array. Compression none, lz4_block, zstd and gzip; digests
// blake3 and sha256 (and CRC32C for v2 chunks that carry one). ZRAN,
// batch, encrypted and separate-meta blobs are refused with a clear
// error for now.
//
// # Reads
//
// A read resolves the chunks under the requested range and asks the
// storage layer (package storage, Options.Cache; a private one without a
// cache directory when nil) where each chunk's bytes are: in a file (the
// blob cache's .blob.data, or a local uncompressed blob) or in memory
// (decoded from the backend). When every chunk is in a file, FS.Read
// returns an fsapi.SegmentsResult: (fd, offset, length) runs that the
// transport copies straight into guest memory. Otherwise the bytes are
// copied into the reply; decompressed chunks go through a small sharded
// in-memory cache. The image supplies the storage layer's Decoder
// (decompression, and digest checks when Options.DigestValidate is set:
// once per chunk and process) and, for v6, the chunk table it widens
// misses with. A digest mismatch fails that read with EIO (ErrDigest) and
// is logged; the data is never served. FS.ReadContext carries the FUSE
// request's context down to the backend. Blob metadata (the ci array, the
// digest array) is loaded once it loads: a failed load is retried by the
// next read, and the blob cache keeps nydusd's .blob.meta and .blob.digest
// files. StartPrefetch warms the cache in nydusd's order (prefetch files,
// else the bootstrap's prefetch table, then prefetch_all). Nothing on the
// read path takes an image-wide lock, and no file descriptor is held per
// inode or per open file.
//
// # Robustness
//
// Every offset, length and count read from an image is checked against
// the bytes it must lie in before it is used (see span), allocations are
// bounded by the input that backs them, directory cycles are refused, and
// every error about image bytes wraps ErrFormat. FuzzV5, FuzzV6 and
// FuzzBlobMeta exercise the parsers and assert what an accepted image
// promises (its chunks lie inside its blobs).
//
// The on-disk structures are defined once, in rafs/layout, which the
// builder shares; docs/rafs-format.md describes the format with the
// committed fixtures as worked examples. The decoders are hand-written: no
// Go library reads RAFS, and the EROFS readers that exist neither expose
// the RAFS chunk addressing nor read lazily from a mapping.
package rafs
