package backend

import (
	"errors"
	"testing"
	"time"
)

// TestMetricsBuckets: nydusd sums read latency per block-size bucket
// (read_cumulative_latency_millis_dist) and counts reads by [size][latency];
// a failed read counts only as a read and an error.
func TestMetricsBuckets(t *testing.T) {
	m := NewMetrics("registry")
	m.Record(1<<20, 30*time.Millisecond, nil) // size bucket 7 (1 MiB+), latency bucket 2 (<= 50 ms)
	m.Record(2<<10, 3*time.Second, nil)       // size bucket 1 (1-4 KiB), latency bucket 7 (> 2 s)
	m.Record(512, time.Millisecond, errors.New("reset"))
	s := m.Snapshot()
	if s.ReadCount != 3 || s.ReadErrors != 1 || s.ReadAmountTotal != 1<<20+2<<10 || s.ReadCumulativeLatencyMillisTotal != 3030 {
		t.Fatalf("totals: %+v", s)
	}
	want := [8]uint64{1: 3000, 7: 30}
	if s.ReadCumulativeLatencyMillisDist != want {
		t.Errorf("latency per size bucket = %v, want %v", s.ReadCumulativeLatencyMillisDist, want)
	}
	if s.ReadCountBlockSizeDist != [8]uint64{1: 1, 7: 1} {
		t.Errorf("size dist = %v", s.ReadCountBlockSizeDist)
	}
	if s.ReadLatencySizesDist[7][2] != 1 || s.ReadLatencySizesDist[1][7] != 1 {
		t.Errorf("[size][latency] = %v", s.ReadLatencySizesDist)
	}
	var sum BackendMetrics
	sum.Add(s)
	sum.Add(s)
	if sum.BackendType != "registry" || sum.ReadCount != 6 || sum.ReadCumulativeLatencyMillisDist[7] != 60 || sum.ReadLatencySizesDist[1][7] != 2 {
		t.Errorf("sum of two: %+v", sum)
	}
}
