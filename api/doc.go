// Package api is nydusd's HTTP API on a unix socket, as far as Kata
// Containers (the Go runtime and runtime-rs, shared_fs =
// "virtio-fs-nydus") and nydusd's conventions need it:
//
//	GET    /api/v1/daemon             200 daemon info: version, id, supervisor, state "RUNNING", backend_collection
//	PUT    /api/v1/daemon             {"log_level": "..."} → 204
//	PUT    /api/v1/daemon/exit        204, then Options.Exit
//	POST   /api/v1/mount?mountpoint=  {"fs_type","source","config"[,"prefetch_files"]} → 204
//	PUT    /api/v1/mount?mountpoint=  remount a RAFS image with a new bootstrap/config → 204
//	DELETE /api/v1/mount?mountpoint=  204
//	GET    /api/v1/metrics/blobcache  200 the blob caches' counters (nydusd's names; Options.Caches)
//	GET    /api/v1/metrics/backend    200 the backend reads the blob caches made (nydusd's names)
//	GET    /api/v1/metrics[/...]      404 for an unknown id, else 501: no other counters are kept yet
//	GET    /api/v1/daemon/backend?mountpoint=  200 the RAFS image's superblock settings and blob ids
//	PUT    /api/v1/daemon/start       204: the daemon serves from the start, nothing to do
//	GET    /api/v2/daemon             200 daemon info without backend_collection (PUT: as v1)
//	*      /api/v2/blobs              501: blob-cache entries belong to nydusd's fscache mode
//
// Every response carries Content-Type: application/json and Server: Nydus
// API. Errors are {"code":"UNDEFINED","message":"..."} with status 404
// for an unknown route, 400 for a malformed request or a method the route
// does not take, 501 for what is not supported, 500 for everything else
// (an occupied mountpoint, an unknown one, a bad config).
//
// The mountpoint query value is percent-decoded (runtime-rs encodes '/' as
// %2F; the Go runtime sends it raw), with '+' kept as is: Kata's container
// ids may contain it and the Go runtime does not escape it.
//
// mounted_time is RFC 3339 (UTC, nanoseconds); no Kata client reads it.
// Not served (404): /api/v1/daemon/{events,fuse/...} and /api/v1/config:
// neither Kata runtime calls them (they serve nydus-snapshotter's own
// fusedev/fscache daemons and their failover).
//
// A RAFS mount fails (500) unless every blob of the image can be opened
// through its backend, naming each missing blob and where it was looked
// for. Failed calls are logged as warnings, successful ones at debug
// level; mounts, remounts and unmounts at info.
//
// Mounts go into a vfs mount table; the filesystems are built by a
// factory (Options.NewFS; DefaultNewFS makes passthrough shares and RAFS
// images from nydusd v1/v2 configs: their backend, their blob cache, shared
// through a storage.Pool by mounts naming one cache directory, and their
// prefetch, with the request's prefetch_files first).
package api
