package rafs_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
)

// TestPrefetchSources prefetches from each source in nydusd's order, then
// takes the backend down: what was prefetched reads from the cache.
func TestPrefetchSources(t *testing.T) {
	for _, tc := range []struct {
		name   string
		build  builder.Options
		opts   rafs.PrefetchOptions
		prefix string // files expected in the cache
	}{
		{"files", builder.Options{FsVersion: 6}, rafs.PrefetchOptions{Files: []string{"/d2", "/d3/f3"}}, "/d2/"},
		{"files override table", builder.Options{PrefetchFiles: []string{"/d4"}}, rafs.PrefetchOptions{Files: []string{"/d2"}}, "/d2/"},
		{"bootstrap table", builder.Options{PrefetchFiles: []string{"/d4"}}, rafs.PrefetchOptions{}, "/d4/"},
		{"all v6", builder.Options{}, rafs.PrefetchOptions{All: true}, "/"},
		{"all v5", builder.Options{FsVersion: 5}, rafs.PrefetchOptions{All: true}, "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.build.ChunkSize = 64 << 10
			boot, blobDir, want := buildTree(t, 50, tc.build)
			be := &faultInjector{Backend: backend.NewLocalFS(blobDir)}
			m, err := storage.NewManager(storage.Options{Type: storage.TypeBlobcache, WorkDir: t.TempDir(), Log: quiet(),
				Prefetch: storage.PrefetchOptions{Threads: 2}})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			img, err := rafs.Open(boot, rafs.Options{Backend: be, Cache: m, Log: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			p, err := img.StartPrefetch(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := p.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			if be.reads.Load() == 0 {
				t.Fatal("nothing prefetched")
			}
			be.down.Store(true)
			sub := map[string][]byte{}
			for p, d := range want {
				if strings.HasPrefix(p, tc.prefix) {
					sub[p] = d
				}
			}
			if len(sub) == 0 {
				t.Fatal("no files under", tc.prefix)
			}
			readTree(t, img, sub)
		})
	}
	if _, err := (&rafs.Image{}).StartPrefetch(rafs.PrefetchOptions{Files: []string{"rel"}}); err == nil {
		t.Fatal("relative prefetch path accepted")
	}
}
