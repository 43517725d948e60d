package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
)

func newManager(t *testing.T, o Options) *Manager {
	t.Helper()
	if o.Log == nil {
		o.Log = quietLog()
	}
	m, err := NewManager(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestCacheFillAndReuse(t *testing.T) {
	tb := newTestBlob("aa11", 32, 4096, 1)
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}}
	dir := t.TempDir()
	for _, typ := range []string{TypeBlobcache, TypeFilecache} {
		t.Run(typ, func(t *testing.T) {
			dir := filepath.Join(dir, typ)
			m := newManager(t, Options{Type: typ, WorkDir: dir})
			b, err := m.Open(tb.desc(), be, identity{}, tb)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, b, tb.chunks); !bytes.Equal(got, tb.data) {
				t.Fatal("first read differs")
			}
			before := be.reads.Load()
			if got := readAll(t, b, tb.chunks); !bytes.Equal(got, tb.data) {
				t.Fatal("second read differs")
			}
			if be.reads.Load() != before {
				t.Fatalf("second read went to the backend (%d reads)", be.reads.Load()-before)
			}
			b.Close()
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			// The files are nydusd's layout, complete.
			cm, err := os.ReadFile(filepath.Join(dir, tb.id+".blob.data.chunk_map"))
			if err != nil {
				t.Fatal(err)
			}
			if len(cm) != 4096+4 || binary.LittleEndian.Uint32(cm[12:]) != chunkMapAllReady || !bytes.Equal(cm[4096:], []byte{0xff, 0xff, 0xff, 0xff}) {
				t.Fatalf("chunk map %d bytes, header %x, bits %x", len(cm), cm[:16], cm[4096:])
			}
			data, err := os.ReadFile(filepath.Join(dir, tb.id+".blob.data"))
			if err != nil || !bytes.Equal(data, tb.data) {
				t.Fatalf("blob.data: %v", err)
			}
			// A new manager reads it all without the backend.
			be.fail.Store(true)
			defer be.fail.Store(false)
			m2 := newManager(t, Options{Type: typ, WorkDir: dir})
			b2, err := m2.Open(tb.desc(), be, identity{}, tb)
			if err != nil {
				t.Fatal(err)
			}
			defer b2.Close()
			if got := readAll(t, b2, tb.chunks); !bytes.Equal(got, tb.data) {
				t.Fatal("read from the cache differs")
			}
		})
	}
}

// TestNydusdLayout opens a cache directory laid out by hand exactly as
// nydusd lays it out: .blob.data sparse at the uncompressed size, the
// chunk map with its header and MSB-first bits, and serves the chunks it
// marks without the backend.
func TestNydusdLayout(t *testing.T) {
	tb := newTestBlob("0123abcd", 20, 4096, 2)
	dir := t.TempDir()
	data := make([]byte, len(tb.data))
	cm := make([]byte, 4096+3)
	binary.LittleEndian.PutUint32(cm[0:], 0x424D4150)
	binary.LittleEndian.PutUint32(cm[4:], 1)
	binary.LittleEndian.PutUint32(cm[8:], 0x434D4150)
	ready := []int{0, 3, 7, 8, 15, 19}
	for _, i := range ready {
		cm[4096+i/8] |= 0x80 >> (i % 8)
		copy(data[i*4096:(i+1)*4096], tb.data[i*4096:])
	}
	if err := os.WriteFile(filepath.Join(dir, tb.id+".blob.data"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, tb.id+".blob.data.chunk_map"), cm, 0o644); err != nil {
		t.Fatal(err)
	}
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}}
	m := newManager(t, Options{Type: TypeBlobcache, WorkDir: dir})
	b := openTest(t, m, tb, be, nil)
	for _, i := range ready {
		if !b.Ready(uint32(i)) {
			t.Fatalf("chunk %d not ready", i)
		}
	}
	for i := range tb.chunks {
		if b.Ready(uint32(i)) != (bytes.Contains([]byte{0, 3, 7, 8, 15, 19}, []byte{byte(i)})) {
			t.Fatalf("chunk %d ready = %v", i, b.Ready(uint32(i)))
		}
	}
	var want []Chunk
	for _, i := range ready {
		c := tb.chunks[i]
		c.Verify = true // checked once: nydusd may have written it before a power loss
		want = append(want, c)
	}
	got := readAll(t, b, want)
	if be.reads.Load() != 0 {
		t.Fatalf("%d backend reads for chunks the chunk map marks", be.reads.Load())
	}
	for k, i := range ready {
		if !bytes.Equal(got[k*4096:(k+1)*4096], tb.data[i*4096:(i+1)*4096]) {
			t.Fatalf("chunk %d differs", i)
		}
	}
	if got := readAll(t, b, tb.chunks); !bytes.Equal(got, tb.data) {
		t.Fatal("whole blob differs")
	}
}

func TestUntrustedFilesRebuilt(t *testing.T) {
	tb := newTestBlob("bad0", 8, 4096, 3)
	goodMap := func() []byte {
		cm := make([]byte, 4096+1)
		binary.LittleEndian.PutUint32(cm[0:], chunkMapMagic)
		binary.LittleEndian.PutUint32(cm[4:], 1)
		binary.LittleEndian.PutUint32(cm[8:], chunkMapMagic2)
		cm[4096] = 0xff // claims everything
		return cm
	}
	garbage := bytes.Repeat([]byte{0x5a}, len(tb.data))
	tests := []struct {
		name string
		cm   func() []byte
		data []byte
	}{
		{"map too short", func() []byte { return goodMap()[:4096] }, garbage},
		{"map too long", func() []byte { return append(goodMap(), 0) }, garbage},
		{"bad magic", func() []byte { m := goodMap(); m[0] ^= 1; return m }, garbage},
		{"bad version", func() []byte { m := goodMap(); m[4] = 2; return m }, garbage},
		{"bad all_ready", func() []byte { m := goodMap(); m[12] = 1; return m }, garbage},
		{"data wrong size", goodMap, garbage[:len(garbage)-1]},
		{"data without map", nil, garbage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.cm != nil {
				os.WriteFile(filepath.Join(dir, tb.id+".blob.data.chunk_map"), tc.cm(), 0o644)
			}
			os.WriteFile(filepath.Join(dir, tb.id+".blob.data"), tc.data, 0o644)
			be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}}
			m := newManager(t, Options{Type: TypeBlobcache, WorkDir: dir})
			b := openTest(t, m, tb, be, nil)
			if got := readAll(t, b, tb.chunks); !bytes.Equal(got, tb.data) {
				t.Fatal("served untrusted cache bytes")
			}
			if be.reads.Load() == 0 {
				t.Fatal("nothing was fetched")
			}
		})
	}
}

func TestFaultInjectorOneFetchPerChunk(t *testing.T) {
	tb := newTestBlob("cc", 64, 4096, 4)
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}, delay: 50 * time.Millisecond}
	m := newManager(t, Options{Type: TypeBlobcache, WorkDir: t.TempDir(), NoAmplify: true})
	b := openTest(t, m, tb, be, tb)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := readAll(t, b, tb.chunks[5:6]); !bytes.Equal(got, tb.data[5*4096:6*4096]) {
				t.Error("wrong bytes")
			}
		}()
	}
	wg.Wait()
	if n := be.reads.Load(); n != 1 {
		t.Fatalf("%d backend reads for one chunk read by 16 readers", n)
	}
	// Two mounts of one blob share the entry.
	b2, err := m.Open(tb.desc(), be, identity{}, tb)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if !b2.Ready(5) {
		t.Fatal("second handle does not share the cache entry")
	}
}

func TestFaultInjectorMerging(t *testing.T) {
	tb := newTestBlob("dd", 64, 4096, 5)
	tests := []struct {
		name      string
		opts      Options
		read      []Chunk
		wantReads int64
		wantReady int
	}{
		{"16 chunks one request", Options{NoAmplify: true}, tb.chunks[0:16], 1, 16},
		{"batch splits", Options{NoAmplify: true, BatchSize: 128 << 10}, tb.chunks[0:64], 2, 64},
		{"amplify to neighbours", Options{BatchSize: 128 << 10}, tb.chunks[10:11], 1, 32},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}}
			tc.opts.Type, tc.opts.WorkDir = TypeBlobcache, t.TempDir()
			m := newManager(t, tc.opts)
			b := openTest(t, m, tb, be, tb)
			readAll(t, b, tc.read)
			waitAhead(m)
			if n := be.reads.Load(); n != tc.wantReads {
				t.Fatalf("%d backend reads, want %d (%v)", n, tc.wantReads, be.ranges)
			}
			if n := readyCount(b, tb); n != tc.wantReady {
				t.Fatalf("%d chunks cached, want %d", n, tc.wantReady)
			}
		})
	}
}

// TestFaultInjectorRunsConcurrent: a read whose missing chunks make
// several backend requests sends them together.
func TestFaultInjectorRunsConcurrent(t *testing.T) {
	tb := newTestBlob("rd", 128, 4096, 10)
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}, delay: 100 * time.Millisecond}
	m := newManager(t, Options{Type: TypeBlobcache, WorkDir: t.TempDir(), BatchSize: 128 << 10, NoAmplify: true})
	b := openTest(t, m, tb, be, tb)
	if got := readAll(t, b, tb.chunks); !bytes.Equal(got, tb.data) {
		t.Fatal("data differs")
	}
	if n, p := be.reads.Load(), be.peak.Load(); n != 4 || p != 4 {
		t.Fatalf("%d requests, %d at once; want 4 at once", n, p)
	}
}

// TestFaultInjectorReadAheadNeverDelaysReads: a read-ahead that hangs
// holds up no read of what is cached, and is counted.
func TestFaultInjectorReadAheadNeverDelaysReads(t *testing.T) {
	tb := newTestBlob("ra", 128, 4096, 7)
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}, holdFrom: 32 * 4096, hold: make(chan struct{})}
	m := newManager(t, Options{Type: TypeBlobcache, WorkDir: t.TempDir(), BatchSize: 128 << 10})
	b := openTest(t, m, tb, be, tb)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 8 { // 0 misses and is widened to 0..31; 2 starts the read-ahead of 32..63
			readAll(t, b, tb.chunks[i:i+1])
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		close(be.hold)
		t.Fatal("reads of cached chunks waited for a read-ahead")
	}
	for i := 0; be.reads.Load() < 2 && i < 500; i++ {
		time.Sleep(10 * time.Millisecond) // the read-ahead is on its way
	}
	if be.reads.Load() != 2 {
		t.Fatalf("%d backend reads, want 2 (the miss, the read-ahead): %v", be.reads.Load(), be.ranges)
	}
	close(be.hold)
	waitAhead(m)
	if n := readyCount(b, tb); n != 64 {
		t.Fatalf("%d chunks cached, want 64", n)
	}
	if got := m.Metrics().ReadAheadBytes; got != 32*4096 {
		t.Fatalf("read_ahead_bytes %d, want %d", got, 32*4096)
	}
}

// TestFaultInjectorSequentialReadAhead: a reader going through a blob
// chunk after chunk gets the next batch fetched in the background before
// it gets there; a reader jumping about does not.
func TestFaultInjectorSequentialReadAhead(t *testing.T) {
	tb := newTestBlob("rb", 128, 4096, 8)
	for _, tc := range []struct {
		name      string
		reads     []int
		wantReady int
	}{
		{"sequential", []int{0, 1, 2, 3}, 64},    // 0..31 widened, then 32..63 read ahead
		{"jumping", []int{0, 5, 9, 3}, 32},       // the widening only
		{"neighbours", []int{0, 1}, 32},          // two in a row are not a stream yet
		{"same chunk again", []int{0, 0, 0}, 64}, // several reads of one chunk are sequential
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}}
			m := newManager(t, Options{Type: TypeBlobcache, WorkDir: t.TempDir(), BatchSize: 128 << 10})
			b := openTest(t, m, tb, be, tb)
			for _, i := range tc.reads {
				if got := readAll(t, b, tb.chunks[i:i+1]); !bytes.Equal(got, tb.data[i*4096:(i+1)*4096]) {
					t.Fatalf("chunk %d differs", i)
				}
				waitAhead(m)
			}
			if n := readyCount(b, tb); n != tc.wantReady {
				t.Fatalf("%d chunks cached, want %d", n, tc.wantReady)
			}
		})
	}
}

// TestReadAheadStopsAtClose: closing a handle cancels its background
// fetches; their chunks are not marked and a new handle fetches them.
func TestFaultInjectorReadAheadStopsAtClose(t *testing.T) {
	tb := newTestBlob("rc", 128, 4096, 9)
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}, holdFrom: 32 * 4096, hold: make(chan struct{})}
	defer close(be.hold)
	m := newManager(t, Options{Type: TypeBlobcache, WorkDir: t.TempDir(), BatchSize: 128 << 10})
	b, err := m.Open(tb.desc(), be, identity{}, tb)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		readAll(t, b, tb.chunks[i:i+1])
	}
	closed := make(chan error)
	go func() { closed <- b.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for a hung read-ahead")
	}
	waitAhead(m)
	b2 := openTest(t, m, tb, be, tb)
	if n := readyCount(b2, tb); n != 32 {
		t.Fatalf("%d chunks cached after the cancelled read-ahead, want 32", n)
	}
}

func TestFaultInjectorDigestMismatch(t *testing.T) {
	tb := newTestBlob("ee", 4, 4096, 6)
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}}
	be.corrupt.Store(true)
	dir := t.TempDir()
	m := newManager(t, Options{Type: TypeBlobcache, WorkDir: dir, NoAmplify: true})
	b := openTest(t, m, tb, be, tb)
	c := tb.chunks[1]
	c.Verify = true
	locs := make([]Location, 1)
	if err := b.Get(context.Background(), []Chunk{c}, locs); err == nil {
		t.Fatal("corrupt chunk served")
	}
	if b.Ready(1) {
		t.Fatal("corrupt chunk marked ready")
	}
	be.corrupt.Store(false)
	if got := readAll(t, b, []Chunk{c}); !bytes.Equal(got, tb.data[4096:8192]) {
		t.Fatal("refetch differs")
	}
}

func TestFaultInjectorBackendErrorNotSticky(t *testing.T) {
	tb := newTestBlob("ff", 4, 4096, 7)
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}}
	m := newManager(t, Options{Type: TypeBlobcache, WorkDir: t.TempDir()})
	b := openTest(t, m, tb, be, tb)
	be.fail.Store(true)
	if err := b.Get(context.Background(), tb.chunks, make([]Location, 4)); err == nil {
		t.Fatal("no error from a failing backend")
	}
	be.fail.Store(false)
	if got := readAll(t, b, tb.chunks); !bytes.Equal(got, tb.data) {
		t.Fatal("read after recovery differs")
	}
}

func TestDummyCacheGoesToBackend(t *testing.T) {
	tb := newTestBlob("gg", 4, 4096, 8)
	for _, typ := range []string{"", TypeDummy} {
		be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}}
		dir := t.TempDir()
		m := newManager(t, Options{Type: typ, WorkDir: dir})
		b, err := m.Open(tb.desc(), be, identity{}, tb)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, b, tb.chunks)
		readAll(t, b, tb.chunks)
		for i := 0; be.reads.Load() < 2 && i < 500; i++ {
			time.Sleep(10 * time.Millisecond) // the read-ahead is on its way
		}
		if be.reads.Load() != 2 {
			t.Fatalf("%q: %d backend reads, want 2", typ, be.reads.Load())
		}
		b.Close()
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Fatalf("%q wrote %d files", typ, len(ents))
		}
	}
}

func TestUnwritableCacheDir(t *testing.T) {
	tb := newTestBlob("hh", 4, 4096, 9)
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}}
	// A work dir that is a file: nothing can be created under it.
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	m := newManager(t, Options{Type: TypeBlobcache, WorkDir: f})
	b := openTest(t, m, tb, be, tb)
	if got := readAll(t, b, tb.chunks); !bytes.Equal(got, tb.data) {
		t.Fatal("read differs")
	}
}

func TestEvictColdBlobs(t *testing.T) {
	dir := t.TempDir()
	evictColdBlobs(t, dir, Options{Type: TypeBlobcache, WorkDir: dir, MaxSize: 3 * (64<<10 + 8192)})
}

// TestMaxSizeFromConfigFile: max_size (our extension) reaches the cache
// from a config file in each of nydusd's shapes, and caps it.
func TestMaxSizeFromConfigFile(t *testing.T) {
	const capBytes = 3 * (64<<10 + 8192)
	for _, tc := range []struct{ name, text string }{
		{"v2 json", `{"version":2,"backend":{"type":"localfs","localfs":{"dir":"/tmp"}},"cache":{"type":"blobcache","filecache":{"work_dir":%q,"max_size":%d}}}`},
		{"v2 toml", "version = 2\n[backend]\ntype = \"localfs\"\n[backend.localfs]\ndir = \"/tmp\"\n[cache]\ntype = \"filecache\"\n[cache.filecache]\nwork_dir = %q\nmax_size = %d\n"},
		{"v1 json", `{"device":{"backend":{"type":"localfs","config":{"dir":"/tmp"}},"cache":{"type":"blobcache","config":{"work_dir":%q,"max_size":%d}}},"mode":"direct"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(t.TempDir(), "config")
			if err := os.WriteFile(path, []byte(fmt.Sprintf(tc.text, dir, capBytes)), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := backend.LoadConfig(path)
			if err != nil {
				t.Fatal(err)
			}
			o := SettingsFromConfig(cfg).Cache
			if o.MaxSize != capBytes || o.WorkDir != dir {
				t.Fatalf("max_size %d work_dir %q, want %d %q", o.MaxSize, o.WorkDir, capBytes, dir)
			}
			evictColdBlobs(t, dir, o)
		})
	}
}

func evictColdBlobs(t *testing.T, dir string, o Options) {
	o.SyncInterval = 20 * time.Millisecond
	var blobs []*testBlob
	be := &faultInjector{blobs: map[string][]byte{}}
	for i := range 4 {
		tb := newTestBlob(string(rune('a'+i))+"blob", 16, 4096, int64(10+i))
		blobs = append(blobs, tb)
		be.blobs[tb.id] = tb.data
	}
	m := newManager(t, o)
	var open *Blob
	for i, tb := range blobs {
		b, err := m.Open(tb.desc(), be, identity{}, tb)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, b, tb.chunks)
		if i == 0 {
			open = b // kept open: never evicted, although the oldest
			continue
		}
		b.Close()
		time.Sleep(30 * time.Millisecond)
	}
	defer open.Close()
	deadline := time.Now().Add(5 * time.Second)
	for m.Metrics().EvictedBlobs == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if m.Metrics().EvictedBlobs == 0 {
		t.Fatal("nothing evicted")
	}
	if _, err := os.Stat(filepath.Join(dir, blobs[0].id+".blob.data")); err != nil {
		t.Fatalf("the open blob was evicted: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, blobs[1].id+".blob.data")); err == nil {
		t.Fatal("the coldest closed blob survived")
	}
}

// A backend that times out fails the read once (no retries of our own on
// top of the backend's); a reader whose fetcher's request was abandoned
// fetches the chunk itself.
func TestFaultInjectorTimeoutNotRetried(t *testing.T) {
	tb := newTestBlob("to", 4, 4096, 30)
	// The backend's own per-attempt timeout: a deadline error while the
	// reader's context is alive.
	be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}, failErr: fmt.Errorf("attempt: %w", context.DeadlineExceeded)}
	m := newManager(t, Options{Type: TypeBlobcache, WorkDir: t.TempDir(), NoAmplify: true})
	b := openTest(t, m, tb, be, nil)
	be.fail.Store(true)
	if err := b.Get(context.Background(), tb.chunks[:1], make([]Location, 1)); err == nil {
		t.Fatal("timed-out read succeeded")
	}
	if n := be.reads.Load(); n != 1 {
		t.Fatalf("%d backend reads for one timed-out read", n)
	}
	be.fail.Store(false)
	be.delay = 200 * time.Millisecond
	// Reader A's request goes away while B waits for A's fetch.
	actx, acancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Get(actx, tb.chunks[1:2], make([]Location, 1)) }()
	time.Sleep(50 * time.Millisecond)
	bdone := make(chan []byte, 1)
	go func() { bdone <- readAll(t, b, tb.chunks[1:2]) }()
	time.Sleep(50 * time.Millisecond)
	acancel()
	<-done
	if got := <-bdone; !bytes.Equal(got, tb.data[4096:8192]) {
		t.Fatal("waiter did not fetch after its fetcher went away")
	}
}
