// Package backend is where RAFS blob data comes from.
//
// A Backend opens a blob by its id (the 64-hex-character digest that names
// it in the image) and the Blob reads byte ranges of it with a context, so
// that remote backends (registry, object storage) and the blob cache of a
// later issue can plug in under the same two small interfaces.
//
// LocalFS is nydusd's "localfs" backend: blobs are files in a directory,
// each named by its blob id (with optional fallback directories), or one
// explicit blob file. Its blobs also implement FileBlob, which hands out the
// open *os.File, so that a filesystem can describe uncompressed chunk data
// as (fd, offset, length) segments for the zero-copy read path.
package backend
