// Package backend is where RAFS blob data comes from.
//
// A Backend opens a blob by its id (the 64-hex-character digest that names
// it in the image) and the Blob reads byte ranges of it with a context, so
// that remote backends and the blob cache plug in under the same two small
// interfaces. New picks the backend a nydusd configuration names (Config:
// v1 JSON, v2 JSON or v2 TOML, parsed as nydusd does, with its defaults
// and validation; the cache and rafs sections are parsed here too, for the
// blob cache and the filesystem to consume).
//
// Backends:
//   - localfs: files in a directory (or one blob file). Its blobs implement
//     FileBlob so that a filesystem can serve uncompressed chunks from the
//     fd without copying.
//   - registry: ranged GETs of /v2/<repo>/blobs/sha256:<id>, HEAD for the
//     size.
//   - s3: path-style SigV4 through minio-go.
//   - oss: OSS header signing (hand-written: a dozen lines, and no OSS
//     client is as well kept as minio-go).
//   - http-proxy: HEAD and ranged GETs at {addr}{path}/{id}, over TCP or a
//     unix socket.
//
// Uploader (upload.go) is the write side the converter needs for
// nydusify's --backend-type: Has and Upload of whole blobs for localfs
// (a temporary file renamed into place), s3 (minio-go's PutObject,
// multipart for large blobs) and oss (one signed PUT). The daemon itself
// never writes to a backend.
//
// Each remote backend only knows how to fetch a range once. WithRetry
// (retries with backoff, a timeout per attempt) and WithMetrics (nydusd's
// /api/v1/metrics/backend counters, lock-free) decorate any of them; New
// stacks them. Every ReadAt honours its context: cancelling it cancels the
// HTTP request. A body that is shorter or longer than the range asked for
// is an error, never data.
//
// The registry's auth and redirect handling is written here rather than
// taken from go-containerregistry's transport, because nydusd's behaviour
// differs from it in ways that matter to compatibility: go-containerregistry
// pings /v2/ first and asks for tokens with GET (POST only for OAuth
// refresh tokens), whereas nydusd answers the blob request's own 401,
// resends once without Authorization (Harbor), POSTs the token form and
// falls back to GET per host; go-containerregistry refuses token realms on
// loopback or private addresses other than the registry's own, which
// breaks registries whose token service sits beside them; and redirects to
// object storage must be followed by hand with only Range (never
// Authorization), rewritten by blob_url_scheme/blob_redirected_host and
// cached per blob until the signed URL answers 401/403. Bearer tokens are
// refreshed shortly before they expire (20 s plus jitter), on the request
// that finds them near expiry rather than in a background loop, so a
// backend owns no goroutine; proxy and mirror health pings likewise run
// only while requests come (which is nydusd's check_pause_elapsed).
//
// Secrets (auth, tokens, keys, signed URLs' queries) never appear in
// errors: URLs in errors lose their query, and config errors never quote
// values that may be secret.
package backend
