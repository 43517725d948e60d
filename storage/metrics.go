package storage

import (
	"sync/atomic"
	"time"
)

// Metrics are the blob cache counters, kept with atomics.
type Metrics struct {
	total, wholeHits, partialHits atomic.Int64
	entries                       atomic.Int64
	writeErrors, evicted          atomic.Int64
	readAheadBytes                atomic.Int64

	prefetchBytes, prefetchRequests, prefetchUnmerged atomic.Int64
	prefetchWorkers                                   atomic.Int64
	prefetchBegin, prefetchEnd                        atomic.Int64 // unix ms, 0: never
	prefetchMillis                                    atomic.Int64
}

// BlobcacheMetrics is GET /api/v1/metrics/blobcache, with nydusd's names.
type BlobcacheMetrics struct {
	ID                      string   `json:"id"`
	UnderlyingFiles         []string `json:"underlying_files"`
	StorePath               string   `json:"store_path"`
	PartialHits             int64    `json:"partial_hits"`
	WholeHits               int64    `json:"whole_hits"`
	Total                   int64    `json:"total"`
	EntriesCount            int64    `json:"entries_count"`
	PrefetchDataAmount      int64    `json:"prefetch_data_amount"`
	PrefetchRequestsCount   int64    `json:"prefetch_requests_count"`
	PrefetchWorkers         int64    `json:"prefetch_workers"`
	PrefetchUnmergedChunks  int64    `json:"prefetch_unmerged_chunks"`
	PrefetchCumulativeMs    int64    `json:"prefetch_cumulative_time_millis"`
	PrefetchBeginTimeSecs   int64    `json:"prefetch_begin_time_secs"`
	PrefetchBeginTimeMillis int64    `json:"prefetch_begin_time_millis"`
	PrefetchEndTimeSecs     int64    `json:"prefetch_end_time_secs"`
	PrefetchEndTimeMillis   int64    `json:"prefetch_end_time_millis"`
	BufferedBackendSize     int64    `json:"buffered_backend_size"`
	DataAllReady            bool     `json:"data_all_ready"`
	// Beyond nydusd: cache write failures and evicted blobs.
	WriteErrors  int64 `json:"write_errors"`
	EvictedBlobs int64 `json:"evicted_blobs"`
	// Beyond nydusd: bytes fetched in the background for reads (the
	// widened part of a miss, sequential read-ahead).
	ReadAheadBytes int64 `json:"read_ahead_bytes"`
}

// Metrics returns the blob cache counters.
func (m *Manager) Metrics() BlobcacheMetrics {
	mt := &m.metrics
	out := BlobcacheMetrics{
		UnderlyingFiles:        []string{},
		StorePath:              m.opts.WorkDir,
		PartialHits:            mt.partialHits.Load(),
		WholeHits:              mt.wholeHits.Load(),
		Total:                  mt.total.Load(),
		EntriesCount:           mt.entries.Load(),
		PrefetchDataAmount:     mt.prefetchBytes.Load(),
		PrefetchRequestsCount:  mt.prefetchRequests.Load(),
		PrefetchWorkers:        mt.prefetchWorkers.Load(),
		PrefetchUnmergedChunks: mt.prefetchUnmerged.Load(),
		PrefetchCumulativeMs:   mt.prefetchMillis.Load(),
		WriteErrors:            mt.writeErrors.Load(),
		EvictedBlobs:           mt.evicted.Load(),
		ReadAheadBytes:         mt.readAheadBytes.Load(),
		DataAllReady:           true,
	}
	if b := mt.prefetchBegin.Load(); b > 0 {
		out.PrefetchBeginTimeSecs, out.PrefetchBeginTimeMillis = b/1000, b%1000
	}
	if e := mt.prefetchEnd.Load(); e > 0 {
		out.PrefetchEndTimeSecs, out.PrefetchEndTimeMillis = e/1000, e%1000
	}
	m.mu.Lock()
	for _, e := range m.entries {
		if e.persist {
			out.UnderlyingFiles = append(out.UnderlyingFiles, e.dataPath)
		}
		if !e.allReady() {
			out.DataAllReady = false
		}
	}
	m.mu.Unlock()
	return out
}

// BackendMetrics are the backend counters.
type BackendMetrics struct {
	typ                          string
	count, errors, amount, latMs atomic.Int64
	latDist                      [8]atomic.Int64 // cumulative ms per size bucket
	sizeDist                     [8]atomic.Int64
	latSizeDist                  [8][8]atomic.Int64
}

// Block-size buckets (<1K, 1K, 4K, 16K, 64K, 128K, 512K, 1M and more)
// and latency buckets in ms (<=1, <=20, <=50, <=100, <=500, <=1000,
// <=2000, more). read_cumulative_latency_millis_dist sums latency per size
// bucket; read_latency_sizes_dist counts reads by [size][latency].
var (
	sizeBuckets = [7]int{1 << 10, 4 << 10, 16 << 10, 64 << 10, 128 << 10, 512 << 10, 1 << 20}
	latBuckets  = [7]time.Duration{time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond,
		100 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}
)

func sizeBucket(n int) int {
	for i, b := range sizeBuckets {
		if n < b {
			return i
		}
	}
	return 7
}

func latBucket(d time.Duration) int {
	for i, b := range latBuckets {
		if d <= b {
			return i
		}
	}
	return 7
}

func (b *BackendMetrics) record(n int, ok bool, d time.Duration) {
	b.count.Add(1)
	if !ok {
		b.errors.Add(1)
		return
	}
	b.amount.Add(int64(n))
	b.latMs.Add(d.Milliseconds())
	l, s := latBucket(d), sizeBucket(n)
	b.latDist[s].Add(d.Milliseconds())
	b.sizeDist[s].Add(1)
	b.latSizeDist[s][l].Add(1)
}

// BackendMetricsJSON is GET /api/v1/metrics/backend, with nydusd's names.
type BackendMetricsJSON struct {
	ID                        string      `json:"id"`
	BackendType               string      `json:"backend_type"`
	ReadCount                 int64       `json:"read_count"`
	ReadErrors                int64       `json:"read_errors"`
	ReadAmountTotal           int64       `json:"read_amount_total"`
	ReadCumulativeLatencyMs   int64       `json:"read_cumulative_latency_millis_total"`
	ReadCumulativeLatencyDist [8]int64    `json:"read_cumulative_latency_millis_dist"`
	ReadCountBlockSizeDist    [8]int64    `json:"read_count_block_size_dist"`
	ReadLatencySizesDist      [8][8]int64 `json:"read_latency_sizes_dist"`
}

// BackendMetrics returns the backend counters of every read this manager's
// blobs made.
func (m *Manager) BackendMetrics() BackendMetricsJSON {
	b := &m.backend
	out := BackendMetricsJSON{BackendType: b.typ, ReadCount: b.count.Load(), ReadErrors: b.errors.Load(),
		ReadAmountTotal: b.amount.Load(), ReadCumulativeLatencyMs: b.latMs.Load()}
	for i := range 8 {
		out.ReadCumulativeLatencyDist[i] = b.latDist[i].Load()
		out.ReadCountBlockSizeDist[i] = b.sizeDist[i].Load()
		for j := range 8 {
			out.ReadLatencySizesDist[i][j] = b.latSizeDist[i][j].Load()
		}
	}
	return out
}
