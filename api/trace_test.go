package api

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/metrics"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/spans"
)

// otlpReceiver collects the spans of OTLP/HTTP exports (protobuf).
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	var req coltrace.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(b, &req)
	}
	if err != nil || r.URL.Path != "/v1/traces" {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			o.spans = append(o.spans, ss.Spans...)
		}
	}
	o.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Write(out)
}

// TestTraceColdRead reads a file whose chunks are not in the blob cache
// with every request sampled, and checks the exported span tree:
// FUSE READ -> storage.read -> cache.fill -> backend.read.
func TestTraceColdRead(t *testing.T) {
	recv := &otlpReceiver{}
	srv := httptest.NewServer(recv) // 127.0.0.1
	defer srv.Close()
	tp, err := spans.Setup(context.Background(), spans.Options{Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	o := startObserved(t, metrics.TransportOptions{Tracer: tp.Tracer(spans.Instrumentation), SampleEvery: 1})
	const mnt = "/img"
	if r := o.do(t, "POST", "/api/v1/mount?mountpoint="+mnt, mountBody("rafs", bootstrap, observedConfig(t))); r.status != http.StatusNoContent {
		t.Fatalf("%d %s", r.status, r.body)
	}
	c := o.c
	e := &fuse.EntryOut{NodeId: fuse.FUSE_ROOT_ID}
	for _, name := range []string{"img", "hardlink-test", "foo"} {
		if e, err = c.Lookup(e.NodeId, name); err != nil {
			t.Fatal(err)
		}
	}
	oo, err := c.Open(e.NodeId, syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := c.Read(e.NodeId, oo.Fh, 0, uint32(e.Size)); err != nil || len(b) != int(e.Size) {
		t.Fatalf("read: %d bytes, %v", len(b), err)
	}
	if err := tp.Shutdown(context.Background()); err != nil { // flushes
		t.Fatal(err)
	}

	recv.mu.Lock()
	defer recv.mu.Unlock()
	byID := map[string]*tracepb.Span{}
	children := map[string][]*tracepb.Span{}
	var reads []*tracepb.Span
	for _, s := range recv.spans {
		byID[string(s.SpanId)] = s
		children[string(s.ParentSpanId)] = append(children[string(s.ParentSpanId)], s)
		if s.Name == "FUSE READ" {
			reads = append(reads, s)
		}
	}
	if len(reads) != 1 {
		t.Fatalf("%d FUSE READ spans among %d", len(reads), len(recv.spans))
	}
	// Walk the chain from the READ span.
	chain := []string{"storage.read", "cache.fill", "backend.read"}
	cur := reads[0]
	for _, want := range chain {
		var next *tracepb.Span
		for _, ch := range children[string(cur.SpanId)] {
			if ch.Name == want {
				next = ch
			}
		}
		if next == nil {
			var names []string
			for _, ch := range children[string(cur.SpanId)] {
				names = append(names, ch.Name)
			}
			t.Fatalf("span %q has no child %q (children: %s)", cur.Name, want, strings.Join(names, ", "))
		}
		if string(next.TraceId) != string(reads[0].TraceId) {
			t.Fatalf("%s is in another trace", want)
		}
		cur = next
	}
	var lookups int
	for _, s := range recv.spans {
		if s.Name == "FUSE LOOKUP" && len(s.ParentSpanId) == 0 {
			lookups++
		}
	}
	if lookups != 3 {
		t.Errorf("%d root FUSE LOOKUP spans, want 3", lookups)
	}
}
