package storage

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
)

// TestFaultInjectorMissServedBeforeWideningArrives: a miss widened to the
// chunks after it is served as soon as its own chunk's bytes are in,
// while the server holds back the rest of the same answer; the widened
// chunks land when it comes, in that one request.
func TestFaultInjectorMissServedBeforeWideningArrives(t *testing.T) {
	id := strings.Repeat("ab", 32)
	tb := newTestBlob(id, 64, 4096, 11)
	release := make(chan struct{})
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", fmt.Sprint(len(tb.data)))
			return
		}
		gets.Add(1)
		var from, to int
		if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &from, &to); err != nil {
			http.Error(w, "bad range", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, to, len(tb.data)))
		w.Header().Set("Content-Length", fmt.Sprint(to-from+1))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(tb.data[from : from+4096]) // the first chunk only, then hold
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Write(tb.data[from+4096 : to+1])
	}))
	defer srv.Close()
	defer close(release)
	be, err := backend.NewHTTPProxy(backend.HTTPProxyConfig{Addr: srv.URL}, backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := newManager(t, Options{Type: TypeBlobcache, WorkDir: t.TempDir(), BatchSize: 128 << 10})
	b := openTest(t, m, tb, be, tb)
	done := make(chan []byte, 1)
	go func() { done <- readAll(t, b, tb.chunks[0:1]) }()
	select {
	case got := <-done:
		if !bytes.Equal(got, tb.data[:4096]) {
			t.Fatal("chunk 0 differs")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the miss waited for the widened part of its answer")
	}
	if n := readyCount(b, tb); n != 1 {
		t.Fatalf("%d chunks cached before the rest of the answer, want 1", n)
	}
	release <- struct{}{}
	if got := readAll(t, b, tb.chunks[1:32]); !bytes.Equal(got, tb.data[4096:32*4096]) {
		t.Fatal("widened chunks differ")
	}
	waitAhead(m)
	if n := readyCount(b, tb); n != 32 || gets.Load() != 1 {
		t.Fatalf("%d chunks cached after %d GETs, want 32 after 1", n, gets.Load())
	}
}

// TestFaultInjectorWideningAdapts: a reader that never reads what its
// misses were widened to gets narrower windows (down to an eighth of the
// batch); one that reads through them keeps the whole batch.
func TestFaultInjectorWideningAdapts(t *testing.T) {
	tb := newTestBlob("wa", 512, 4096, 12)
	t.Run("scattered", func(t *testing.T) {
		be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}}
		m := newManager(t, Options{Type: TypeBlobcache, WorkDir: t.TempDir(), BatchSize: 128 << 10})
		b := openTest(t, m, tb, be, tb)
		for i := 0; i < 8*40; i += 40 {
			readAll(t, b, tb.chunks[i:i+1])
			waitAhead(m)
		}
		if got := b.widenBudget(); got != 16<<10 {
			t.Fatalf("widening budget %d after scattered reads, want %d", got, 16<<10)
		}
		readAll(t, b, tb.chunks[400:401])
		waitAhead(m)
		var ready []int
		for i := 400; i < 440; i++ {
			if b.Ready(uint32(i)) {
				ready = append(ready, i)
			}
		}
		if len(ready) != 4 {
			t.Fatalf("chunks %v cached after a miss at 400, want 400-403", ready)
		}
	})
	t.Run("sequential", func(t *testing.T) {
		be := &faultInjector{blobs: map[string][]byte{tb.id: tb.data}}
		m := newManager(t, Options{Type: TypeBlobcache, WorkDir: t.TempDir(), BatchSize: 128 << 10})
		b := openTest(t, m, tb, be, tb)
		for i := range 256 {
			readAll(t, b, tb.chunks[i:i+1])
			waitAhead(m)
		}
		if got := b.widenBudget(); got != 128<<10 {
			t.Fatalf("widening budget %d after a sequential read, want %d", got, 128<<10)
		}
	})
}
