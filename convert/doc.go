// Package convert turns OCI and Docker images into Nydus images in a
// registry (what nydusify convert does) and checks Nydus images against the
// rules nydusify check applies.
//
// Conversion, per source image (one platform of an index, or each):
//   - every source layer is streamed from its source (registry, OCI image
//     layout or docker save archive), its compressed bytes hashed against
//     the layer digest, decompressed (gzip, zstd or none, found by the
//     stream's magic), and fed to rafs/builder as a tar stream. The layer is
//     built alone (no parent) with its whiteout entries kept as files, into
//     a Nydus >= 2.2 blob with an inlined bootstrap (RAFS v6) — the blob
//     layer, named by the sha256 of the whole blob;
//   - layers are converted in parallel, at most min(cores, memory / 256 MiB)
//     at a time, and the result of each is kept in a local cache keyed by
//     the source layer digest and the build settings, so a layer converted
//     once is never converted again;
//   - the per-layer bootstraps are merged in order (builder.Merge: whiteouts
//     and opaque directories applied) into the image bootstrap, shipped as
//     the last layer: gzip(tar) of image/, image/image.boot and, for v6,
//     image/<blob digest>.blob.meta for each layer;
//   - the config is the source's with rootfs.diff_ids and history extended;
//     the manifest carries the nydus annotations;
//   - blobs are pushed with a HEAD first (go-containerregistry's pusher) and
//     mounted from another repository of the same registry when the cache
//     remembers pushing them there; manifests go last, the tag last of all,
//     so a failed conversion never moves the target tag.
//
// With a build cache image (Options.BuildCache, --build-cache) layers are
// also looked up in a registry image recording, per source layer and build
// settings, the blob and layer bootstrap a conversion made (on any
// machine); a hit mounts the blob from the cache repository instead of
// converting. New records are written back after the target tag.
//
// With a storage backend (Options.Backend, --backend-type s3/oss/localfs)
// the blobs go there through backend.Uploader and the manifest holds only
// the bootstrap layer. With a chunk dictionary (Options.ChunkDict) layers
// are built against its chunks and its blobs become blob layers of the
// manifest, mounted from its repository.
//
// Check applies nydusify check's rules: manifest, bootstrap and, given the
// source, the filesystem rule, which mounts the Nydus image through our
// FUSE server with the daemon's registry backend (lazy, chunk digests
// validated), walks the mount with system calls and compares it with the
// source flattened by go-containerregistry's mutate.Extract.
//
// The on-registry layout (media types, annotations, bootstrap layer, index
// for several platforms) is written down in docs/convert.md.
//
// Hand-written parts, and why: no Go library writes Nydus images; registry
// access, authentication (the Docker config file keychain), OCI layouts and
// docker save archives all go through github.com/google/go-containerregistry.
// The manifests are built from its types and pushed as raw bytes, because the
// Nydus manifest (a blob layer with a media type no image library
// understands, a bootstrap layer whose diff_id is not its blob's) is not an
// image those libraries can assemble.
package convert
