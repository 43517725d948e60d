package metrics

import (
	"sync/atomic"
	"time"
)

// Fop is one of nydusd's counted filesystem operations, in the order of
// the fop_hits, fop_errors and fop_cumulative_latency_total arrays.
type Fop int

// nydusd's fop order.
const (
	FopGetattr Fop = iota
	FopReadlink
	FopOpen
	FopRelease
	FopRead
	FopStatfs
	FopGetxattr
	FopListxattr
	FopOpendir
	FopLookup
	FopReaddir
	FopReaddirplus
	FopAccess
	FopForget
	FopBatchForget
	FopCount
)

var fopNames = [FopCount]string{"getattr", "readlink", "open", "release", "read", "statfs", "getxattr",
	"listxattr", "opendir", "lookup", "readdir", "readdirplus", "access", "forget", "batch_forget"}

func (f Fop) String() string {
	if f < 0 || f >= FopCount {
		return "unknown"
	}
	return fopNames[f]
}

// fopOpcodes are the FUSE opcodes of the fops.
var fopOpcodes = [FopCount]uint32{3, 5, 14, 18, 15, 17, 22, 23, 27, 1, 28, 44, 34, 2, 42}

// Opcode is the fop's FUSE opcode.
func (f Fop) Opcode() uint32 {
	if f < 0 || f >= FopCount {
		return 0
	}
	return fopOpcodes[f]
}

// Number of buckets of block_count_read and read_latency_dist.
const (
	SizeBuckets    = 8
	LatencyBuckets = 8
)

// SizeBucket returns the block_count_read bucket of a read of n bytes:
// <1K, 1K, 4K, 16K, 64K, 128K, 512K, 1M (and over).
func SizeBucket(n int) int {
	switch {
	case n < 1<<10:
		return 0
	case n < 4<<10:
		return 1
	case n < 16<<10:
		return 2
	case n < 64<<10:
		return 3
	case n < 128<<10:
		return 4
	case n < 512<<10:
		return 5
	case n < 1<<20:
		return 6
	}
	return 7
}

// latencyBounds are the upper bounds of read_latency_dist's buckets (the
// last one is open): ≤200 µs, 1 ms, 20 ms, 50 ms, 500 ms, 1 s, 2 s, >2 s.
var latencyBounds = [LatencyBuckets - 1]time.Duration{200 * time.Microsecond, time.Millisecond,
	20 * time.Millisecond, 50 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}

// LatencyBucket returns the read_latency_dist bucket of d.
func LatencyBucket(d time.Duration) int {
	for i, b := range latencyBounds {
		if d <= b {
			return i
		}
	}
	return LatencyBuckets - 1
}

// shards is the number of stripes of the hot counters (a power of two).
const shards = 8

// shard is one stripe of a mount's hot counters, padded to its own cache
// lines.
type shard struct {
	nrOpens    atomic.Uint64
	dataRead   atomic.Uint64
	blockCount [SizeBuckets]atomic.Uint64
	hits       [FopCount]atomic.Uint64
	errors     [FopCount]atomic.Uint64
	latencyUS  [FopCount]atomic.Uint64
	readDist   [LatencyBuckets]atomic.Uint64
	_          [64]byte
}

// counters are the striped counters of one mount.
type counters [shards]shard

func (c *counters) pick(unique uint64) *shard { return &c[unique&(shards-1)] }

// Global is nydusd's GET /api/v1/metrics object.
type Global struct {
	FilesAccountEnabled         bool                   `json:"files_account_enabled"`
	AccessPatternEnabled        bool                   `json:"access_pattern_enabled"`
	RecordLatestReadFilesEnable bool                   `json:"record_latest_read_files_enabled"`
	MeasureLatency              bool                   `json:"measure_latency"`
	ID                          string                 `json:"id"`
	NrOpens                     uint64                 `json:"nr_opens"`
	DataRead                    uint64                 `json:"data_read"`
	BlockCountRead              [SizeBuckets]uint64    `json:"block_count_read"`
	FopHits                     [FopCount]uint64       `json:"fop_hits"`
	FopErrors                   [FopCount]uint64       `json:"fop_errors"`
	FopCumulativeLatencyTotal   [FopCount]uint64       `json:"fop_cumulative_latency_total"`
	ReadLatencyDist             [LatencyBuckets]uint64 `json:"read_latency_dist"`
}

// sum adds the shards into g.
func (c *counters) sum(g *Global) {
	for i := range c {
		s := &c[i]
		g.NrOpens += s.nrOpens.Load()
		g.DataRead += s.dataRead.Load()
		for j := range s.blockCount {
			g.BlockCountRead[j] += s.blockCount[j].Load()
		}
		for j := range s.hits {
			g.FopHits[j] += s.hits[j].Load()
			g.FopErrors[j] += s.errors[j].Load()
			g.FopCumulativeLatencyTotal[j] += s.latencyUS[j].Load()
		}
		for j := range s.readDist {
			g.ReadLatencyDist[j] += s.readDist[j].Load()
		}
	}
}

// add adds o's counters into g (for daemon totals).
func (g *Global) add(o *Global) {
	g.NrOpens += o.NrOpens
	g.DataRead += o.DataRead
	for j := range g.BlockCountRead {
		g.BlockCountRead[j] += o.BlockCountRead[j]
	}
	for j := range g.FopHits {
		g.FopHits[j] += o.FopHits[j]
		g.FopErrors[j] += o.FopErrors[j]
		g.FopCumulativeLatencyTotal[j] += o.FopCumulativeLatencyTotal[j]
	}
	for j := range g.ReadLatencyDist {
		g.ReadLatencyDist[j] += o.ReadLatencyDist[j]
	}
}
