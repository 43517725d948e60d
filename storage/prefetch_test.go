package storage

import (
	"bytes"
	"context"
	"testing"
	"time"
)

func TestPrefetchFillsCache(t *testing.T) {
	tb := newTestBlob("pf", 64, 4096, 20)
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}}
	m := newManager(t, Options{Type: TypeBlobcache, WorkDir: t.TempDir(), Prefetch: PrefetchOptions{Threads: 2, BatchSize: 64 << 10}})
	b := openTest(t, m, tb, be, tb)
	job := m.Prefetch(context.Background(), b, tb.chunks)
	if err := job.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !b.AllReady() {
		t.Fatal("prefetch did not fill the cache")
	}
	if n := be.reads.Load(); n != 4 {
		t.Fatalf("%d backend reads for 256 KiB in 64 KiB requests, want 4", n)
	}
	before := be.reads.Load()
	if got := readAll(t, b, tb.chunks); !bytes.Equal(got, tb.data) || be.reads.Load() != before {
		t.Fatal("read after prefetch went to the backend or differs")
	}
	mt := m.Metrics()
	if mt.PrefetchDataAmount != int64(len(tb.data)) || mt.PrefetchRequestsCount != 4 || mt.PrefetchUnmergedChunks != 64 || !mt.DataAllReady {
		t.Fatalf("metrics %+v", mt)
	}
}

// A read of a chunk that prefetch is fetching waits for that fetch.
func TestFaultInjectorReadWaitsForPrefetch(t *testing.T) {
	tb := newTestBlob("pw", 16, 4096, 21)
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}, delay: 100 * time.Millisecond}
	m := newManager(t, Options{Type: TypeBlobcache, WorkDir: t.TempDir(), NoAmplify: true})
	b := openTest(t, m, tb, be, tb)
	job := m.Prefetch(context.Background(), b, tb.chunks)
	time.Sleep(20 * time.Millisecond)
	if got := readAll(t, b, tb.chunks[3:4]); !bytes.Equal(got, tb.data[3*4096:4*4096]) {
		t.Fatal("wrong bytes")
	}
	job.Wait(context.Background())
	if n := be.reads.Load(); n != 1 {
		t.Fatalf("%d backend reads, want 1 (the prefetch's)", n)
	}
}

func TestPrefetchStopsWithContext(t *testing.T) {
	tb := newTestBlob("ps", 64, 4096, 22)
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}, delay: 30 * time.Millisecond}
	m := newManager(t, Options{Type: TypeBlobcache, WorkDir: t.TempDir(), NoAmplify: true, Prefetch: PrefetchOptions{Threads: 1, BatchSize: 4096}})
	b := openTest(t, m, tb, be, tb)
	ctx, cancel := context.WithCancel(context.Background())
	job := m.Prefetch(ctx, b, tb.chunks)
	time.Sleep(50 * time.Millisecond)
	cancel()
	wctx, wcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer wcancel()
	if err := job.Wait(wctx); err != nil {
		t.Fatal("prefetch did not stop")
	}
	if n := be.reads.Load(); n >= 64 {
		t.Fatalf("%d reads: prefetch ran to the end", n)
	}
}

func TestBandwidthLimit(t *testing.T) {
	l := newLimiter(1 << 20) // 1 MiB/s, bucket 16 MiB
	ctx := context.Background()
	if err := l.wait(ctx, 16<<20); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := l.wait(ctx, 200<<10); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("200 KiB at 1 MiB/s after the bucket emptied took %v", d)
	}
	l.take(1 << 20) // reads take without waiting
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := l.wait(cctx, 4096); err == nil {
		t.Fatal("prefetch did not wait behind reads' consumption")
	}
}

// TestFaultInjectorPrefetchOneAtATimeUnderDemand: while a guest read
// keeps the backend busy, prefetch waits, and after its wait sends one
// request at a time, not one per worker.
func TestFaultInjectorPrefetchOneAtATimeUnderDemand(t *testing.T) {
	tb := newTestBlob("py", 64, 4096, 23)
	last := int64(63 * 4096)
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}, delay: 20 * time.Millisecond, holdFrom: last, hold: make(chan struct{})}
	m := newManager(t, Options{Type: TypeBlobcache, WorkDir: t.TempDir(), NoAmplify: true, Prefetch: PrefetchOptions{Threads: 4, BatchSize: 4096}})
	b := openTest(t, m, tb, be, tb)
	read := make(chan struct{})
	go func() { defer close(read); readAll(t, b, tb.chunks[63:]) }() // hangs: the backend stays busy with demand
	for be.busy.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	job := m.Prefetch(context.Background(), b, tb.chunks[:12])
	if err := job.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(be.hold)
	<-read
	if p := be.peak.Load(); p != 2 {
		t.Fatalf("at most %d backend reads at once, want 2 (the guest's, one prefetch)", p)
	}
}
