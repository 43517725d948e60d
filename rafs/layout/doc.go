// Package layout is the RAFS on-disk format as Go types: every structure
// the reader (package rafs) decodes and the builder (rafs/builder) encodes
// is defined here once, with its size, its field offsets (in Decode and
// Encode) and the constants that go with it. docs/rafs-format.md describes
// the format with the committed fixtures as worked examples.
//
// Each fixed-size structure has Decode(b), which reads the structure from
// the start of b, and Encode(b), which writes it to the start of b;
// neither allocates, and b must be at least the structure's size (callers
// check bounds first: the reader against the mapped image, the builder by
// sizing its buffer). Bytes a structure does not name are left alone by
// Encode (the builder's buffers start zeroed) and ignored by Decode.
// Validation of values is the reader's job: this package only moves bytes.
//
// The structures are written by hand because no Go library describes RAFS:
// v6 is EROFS (superblock, inodes, dirents, xattrs, chunk indexes, device
// slots) plus the RAFS extended superblock, blob table and chunk table; v5
// is the older RAFS-only layout; blobs carry the blob.meta chunk-info
// arrays, the blob.digest array and a table of contents behind tar headers.
// All integers are little-endian.
package layout
