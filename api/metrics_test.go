package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vfs"
)

// TestBlobcacheMetrics mounts a built image whose config asks for a blob
// cache and prefetch_all, and reads /api/v1/metrics/blobcache and
// /backend with nydusd's names until the prefetch has filled the cache.
func TestBlobcacheMetrics(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	for i := range 20 {
		os.WriteFile(filepath.Join(src, fmt.Sprintf("f%d", i)), []byte(strings.Repeat(fmt.Sprint(i), 30000+i)), 0o644)
	}
	out := t.TempDir()
	boot, _, err := builder.BuildDir(src, out, builder.Options{ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	cacheDir := t.TempDir()
	config := fmt.Sprintf(`{"device":{"backend":{"type":"localfs","config":{"dir":%q}},"cache":{"type":"blobcache","config":{"work_dir":%q}}},`+
		`"mode":"direct","fs_prefetch":{"enable":true,"prefetch_all":true,"threads_count":2}}`, out, cacheDir)
	pool := storage.NewPool(quiet())
	defer pool.Close()
	v := vfs.New(vfs.Options{NoCache: true, Logger: quiet()})
	defer v.Close()
	s, err := New(Options{VFS: v, Caches: pool, NewFS: DefaultNewFS(FSOptions{Caches: pool, Logger: quiet()}), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, uri, body string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequestWithContext(context.Background(), method, uri, strings.NewReader(body)))
		return w
	}
	if w := do(http.MethodPost, "/api/v1/mount?mountpoint=/img", mountBody("rafs", boot, config)); w.Code != http.StatusNoContent {
		t.Fatalf("mount: %d %s", w.Code, w.Body)
	}
	var bc map[string]any
	deadline := time.Now().Add(20 * time.Second)
	for {
		w := do(http.MethodGet, "/api/v1/metrics/blobcache?id=/img", "")
		if w.Code != http.StatusOK {
			t.Fatalf("blobcache metrics: %d %s", w.Code, w.Body)
		}
		bc = map[string]any{}
		if err := json.Unmarshal(w.Body.Bytes(), &bc); err != nil {
			t.Fatal(err)
		}
		if bc["data_all_ready"] == true && bc["prefetch_data_amount"].(float64) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, k := range []string{"underlying_files", "store_path", "partial_hits", "whole_hits", "total", "entries_count",
		"prefetch_data_amount", "prefetch_requests_count", "prefetch_workers", "prefetch_unmerged_chunks",
		"prefetch_cumulative_time_millis", "prefetch_begin_time_secs", "prefetch_begin_time_millis",
		"prefetch_end_time_secs", "prefetch_end_time_millis", "buffered_backend_size", "data_all_ready"} {
		if _, ok := bc[k]; !ok {
			t.Errorf("blobcache metrics lack %q", k)
		}
	}
	if bc["data_all_ready"] != true || bc["prefetch_data_amount"].(float64) == 0 || bc["store_path"] != cacheDir {
		t.Fatalf("prefetch_all did not fill the cache: %v", bc)
	}
	w := do(http.MethodGet, "/api/v1/metrics/backend?id=/img", "")
	var be map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &be); err != nil || w.Code != http.StatusOK {
		t.Fatalf("backend metrics: %d %s", w.Code, w.Body)
	}
	for _, k := range []string{"backend_type", "read_count", "read_errors", "read_amount_total",
		"read_cumulative_latency_millis_total", "read_cumulative_latency_millis_dist", "read_count_block_size_dist",
		"read_latency_sizes_dist"} {
		if _, ok := be[k]; !ok {
			t.Errorf("backend metrics lack %q", k)
		}
	}
	if be["backend_type"] != "localfs" || be["read_count"].(float64) == 0 {
		t.Fatalf("backend metrics: %v", be)
	}
	if w := do(http.MethodGet, "/api/v1/metrics/blobcache?id=/nope", ""); w.Code != http.StatusNotFound {
		t.Fatalf("unknown id: %d", w.Code)
	}
}
