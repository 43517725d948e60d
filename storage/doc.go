// Package storage is the chunk-level layer between the image reader (rafs)
// and the blob sources (backend): the blob cache, merged fetches and
// prefetch.
//
// # Why this seam
//
// rafs used to read through backend.Blob and got zero copy only when the
// backend handed out a whole local file (backend.FileBlob). A partly filled
// cache file cannot be such a file: a chunk not fetched yet would read as
// zeros. The reader therefore talks to this package in chunks, not bytes:
// it says which chunks (index, compressed and uncompressed offset and size,
// digest) a read needs, and gets back for each one a Location, either
// "ready: this fd at this offset" (the transport preadvs it straight into
// guest memory) or the chunk's bytes (no usable cache file). Everything
// between (is it cached, who fetches it, how requests are merged, checked,
// stored, counted and throttled) lives here and nowhere else.
//
// # Pieces
//
//   - Manager: one per daemon. It owns the cache directory (nydusd's
//     cache.filecache.work_dir), the shared cache entries (two mounts of
//     images sharing a blob share one entry, one chunk map and one fetch
//     per chunk), the flusher that persists readiness, the size cap, the
//     prefetch workers and the metrics.
//   - Blob: one mount's handle on a blob (Manager.Open): the shared entry
//     plus the mount's backend and Decoder. Get is the read path.
//   - Decoder: supplied by the image reader, turns a chunk's stored bytes
//     into its uncompressed bytes and checks its digest. Storage knows no
//     image format and no compression algorithm.
//   - ChunkSource (optional): the blob's chunk table by index, so that a
//     miss can be widened to neighbouring chunks nobody asked for yet.
//
// # On disk: nydusd's filecache layout
//
// A cache directory is interchangeable with nydusd's (v2.2 and later):
//
//	<blob_id>.blob.data             uncompressed chunks at their uncompressed offsets,
//	                                a sparse file of exactly the blob's uncompressed size
//	<blob_id>.blob.raw              instead of .blob.data with cache.compressed: the stored
//	                                (compressed) bytes at their compressed offsets
//	<blob_id>.blob.data.chunk_map   readiness: a 4096-byte header (u32 LE magic 0x424D4150,
//	                                version 1, magic2 0x434D4150, all_ready 0x4D4D4150 once
//	                                complete) then one bit per chunk, MSB first
//	<blob_id>.blob.meta             the uncompressed chunk-info array padded to 4 KiB, then
//	                                the blob's 4 KiB blob.meta header (written by the reader
//	                                through Blob.WriteMeta; never trusted without its checks)
//
// A data file or chunk map of the wrong size, or a chunk map header we do
// not know, is never trusted: both are rebuilt empty (the data file is
// truncated to zero first, so no stale byte survives) and a warning is
// logged.
//
// # Crash safety and power loss
//
// A chunk's bytes are written (pwrite) before anything says they are
// there. Readiness has two levels:
//   - in memory (an atomic bitmap per entry): set right after the pwrite;
//     reads of this process use it;
//   - on disk (the chunk_map bits): set only by the flusher, after an
//     fdatasync of the data file has returned for every chunk it marks.
//
// So after kill -9 at any moment a set bit always describes data that was
// written and synced; chunks written but not yet marked are simply fetched
// again. After a power loss the same holds: the bitmap page may or may not
// have reached the disk, but any bit that did was set after its data was
// durable. The flusher runs every Options.SyncInterval (1 s by default) and
// when an entry is closed; the cost is one fdatasync per interval per
// blob being filled. nydusd itself never syncs (it relies on digest
// validation after a power loss); we keep that too: with validation on,
// every chunk read from a cache file this process did not fill itself is
// checked once against its digest before it is served, which also covers
// cache directories laid out by nydusd.
//
// # Fetching
//
// Get looks up each chunk's in-memory bit without a lock. Misses take the
// entry's mutex only to claim chunks: a chunk already being fetched (by a
// reader or by prefetch) is waited for, never fetched twice; the others
// are claimed together with neighbouring missing chunks (from ChunkSource)
// up to the batch size (amplify_io / batch_size, at least 128 KiB; forward
// only, where a sequential reader goes next). The window adapts per
// handle: once a few batches were widened, it is scaled by twice the
// share of the widened (and read-ahead) bytes that reads then asked for,
// between an eighth of the batch and the batch (a reader of files laid
// out together keeps the whole batch; a reader of scattered small files
// stops paying for neighbours it never reads). Then
// runs of chunks whose stored bytes are adjacent (gaps up to 32 KiB are read
// and dropped) go to the backend as one ranged read each. Each chunk is
// decoded, checked when the reader validates, written and marked, and its
// waiters are woken with either the location or, when it could not be
// stored, its bytes, as soon as its own bytes have arrived: remote
// backends report the answer's progress (backend.WithProgress), so a
// miss widened to the chunks after it waits for its own chunks, not for
// the widened rest of the same answer. With a persistent cache a read's
// runs are detached: they go on in goroutines (at most maxFills per
// Manager, under the handle's background context with the request's
// values but not its cancellation) and the reader waits only on its own
// chunks' flights. Close waits for them. A waiter whose fetcher was
// cancelled fetches itself. Without a persistent cache (and with
// NoReadAhead) the runs of one fetch go out together (at most maxRuns at
// once) and the reader waits for all of them.
//
// Read-ahead: each Blob handle remembers where its last Get ended; after
// seqStreak Gets in a row that each start there (or in the chunk before),
// the next batch of missing chunks is claimed and fetched by a goroutine
// under the handle's background context, which Close cancels before it
// waits for operations to drain. The Manager's ahead channel bounds such
// fetches (maxAhead); without a free token nothing is read ahead. Only
// waiters for those very chunks wait for it.
//
// # Reading the cache file
//
// The data file is opened POSIX_FADV_RANDOM: every mount reads it through
// one descriptor, and the kernel's read-ahead took a guest reading
// scattered files in ascending order for one sequential reader and read
// the neighbours of every file. Readers ask for read-ahead within a guest
// file instead (Blob.WillRead): the chunks after the last one whose first
// page is in the page cache (mincore over a read-only mapping of the data
// file, never touched) are hinted POSIX_FADV_WILLNEED. docs/blobcache.md
// has the rule rafs uses to name them.
//
// # Cache types and failures
//
// cache.type blobcache and filecache persist; dummycache and "" go to the
// backend every time (with zero copy straight from the backend's file
// when it is a local uncompressed blob). A cache directory that cannot be
// written, or a full disk, only turns caching off for that blob: the read
// is served from the fetched bytes and one warning is logged.
//
// # Size cap
//
// Beyond nydusd, which never evicts: Options.MaxSize (config key
// cache.filecache.max_size, v1 device.cache.config.max_size, bytes,
// 0 = no cap) bounds the disk space the
// cache directory's blob files use. When it is exceeded the flusher
// removes whole blobs, least recently used first (by the chunk map's
// mtime), and never a blob this daemon has open.
//
// # Prefetch
//
// Prefetch (Manager.Prefetch) takes the chunks a mount wants warmed and
// queues them, merged into requests of at most the prefetch batch size
// (merging_size / batch_size), for up to Threads background workers. It
// goes through the same claim-fetch-store path as reads, so a read of a
// chunk being prefetched waits for that fetch, and a read never queues
// behind prefetch. The bandwidth limit (bandwidth_rate / bandwidth_limit)
// is a token bucket of capacity max(rate, 16 MiB) refilled every 100 ms;
// reads take tokens without waiting, so on-demand I/O slows prefetch and
// never the other way round. A prefetch stops when its context ends (the
// mount is closed) or the Manager is closed.
//
// # Metrics
//
// Counters are atomics updated on the hot path without locks; Metrics and
// BackendMetrics render them with nydusd's JSON names.
//
// Everything here is hand-written: no Go library implements nydusd's cache
// layout, and the fetch/claim logic is specific to chunked blobs.
package storage
