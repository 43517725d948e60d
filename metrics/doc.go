// Package metrics counts what the daemon serves and reports it the ways
// operators read it: nydusd's metrics API (per mount: the fop counters,
// read sizes and latencies, per-file statistics, the access pattern, the
// requests in flight, recent errors), Prometheus (per opcode, per queue,
// per mount, the blob cache and backend, the Go runtime and the process),
// request logs and slow-request warnings.
//
// Two seams feed it:
//   - FS wraps a filesystem (fuse.RawFileSystem) with nydusd's per-mount
//     counters. It sits between the transport and the filesystem, so the
//     virtio-fs transport and a host /dev/fuse mount (go-fuse's server)
//     are counted the same way.
//   - Transport implements fusewire.Observer: every framed FUSE request,
//     whatever its opcode, with its queue, FUSE unique, status and
//     duration. It keeps the per-opcode and per-queue series, logs each
//     request at debug level and slow ones at warn (rate-limited).
//
// Counters on the hot path are atomics; the ones every request touches are
// striped over cache-line-padded shards (picked from the FUSE unique,
// which the kernel increments per request) so that queue workers on
// different CPUs do not bounce one cache line. Scrapes and API calls sum
// the shards. Latency measurement can be turned off (measure_latency);
// per-file accounting (iostats_files) and the access pattern
// (access_pattern) are opt-in as in nydusd because they cost a map lookup
// per request.
//
// Prometheus series are produced at scrape time from these counters by
// one prometheus.Collector (client_golang), so the hot path never touches
// client_golang's own metric objects. Histograms are exported with the
// buckets the counters keep.
package metrics
