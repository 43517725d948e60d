package rafs_test

import (
	"context"
	"io"
	"path/filepath"
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
			img := prefetched(t, boot, be, tc.opts)
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

// TestPrefetchFixtureWholeImage: prefetch of "/" on nydus's real v6
// image fetches every chunk of its blob (nydusd takes "/" for
// prefetch_all: by the blob's chunk table); with the backend down, every
// file then reads from the cache with its known md5.
func TestPrefetchFixtureWholeImage(t *testing.T) {
	dir := "testdata/fixtures/nydus/v6-2.2"
	be := &faultInjector{Backend: backend.NewLocalFS(dir)}
	img := prefetched(t, filepath.Join(dir, "rafs-v6-2.2.boot"), be, rafs.PrefetchOptions{Files: []string{"/"}})
	be.down.Store(true)
	for name, sum := range map[string]string{"lib.rs": "4709cf8873e419ecedc7d43fdee4a75f", "sync_io.rs": "5442bc7dc9dc5f985c7594e23866ae6f"} {
		n, err := img.Lookup(rafs.RootIno, name)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, n.Size)
		if _, err := img.ReadAt(context.Background(), n.Ino, buf, 0); err != nil && err != io.EOF {
			t.Fatalf("%s: %v", name, err)
		}
		if got := md5(buf); got != sum {
			t.Errorf("%s: md5 %s want %s", name, got, sum)
		}
	}
}

// prefetched opens the image at boot over be with a blob cache of the
// test's own, runs the prefetch o asks for and waits for it.
func prefetched(t *testing.T, boot string, be backend.Backend, o rafs.PrefetchOptions) *rafs.Image {
	t.Helper()
	m, err := storage.NewManager(storage.Options{Type: storage.TypeBlobcache, WorkDir: t.TempDir(), Log: quiet(),
		Prefetch: storage.PrefetchOptions{Threads: 2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	img, err := rafs.Open(boot, rafs.Options{Backend: be, Cache: m, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { img.Close() })
	startPrefetch(t, img, o)
	return img
}

// startPrefetch starts a prefetch of img and waits (up to 30 s) for it.
func startPrefetch(t *testing.T, img *rafs.Image, o rafs.PrefetchOptions) {
	t.Helper()
	p, err := img.StartPrefetch(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestPrefetchWithoutPersistentCache: with a cache that keeps nothing
// (dummycache, or no cache type) a prefetch fetches nothing and says so;
// it never logs "prefetch done".
func TestPrefetchWithoutPersistentCache(t *testing.T) {
	boot, blobDir, _ := buildTree(t, 10, builder.Options{ChunkSize: 64 << 10})
	for _, typ := range []string{storage.TypeDummy, ""} {
		t.Run("type="+typ, func(t *testing.T) {
			var logs strings.Builder
			log := quiet()
			log.SetOutput(&logs)
			m, err := storage.NewManager(storage.Options{Type: typ, Log: log, Prefetch: storage.PrefetchOptions{Threads: 2}})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			be := &faultInjector{Backend: backend.NewLocalFS(blobDir)}
			img, err := rafs.Open(boot, rafs.Options{Backend: be, Cache: m, Log: log})
			if err != nil {
				t.Fatal(err)
			}
			startPrefetch(t, img, rafs.PrefetchOptions{All: true})
			img.Close() // waits for the prefetch's goroutine
			if !strings.Contains(logs.String(), "nothing prefetched") || strings.Contains(logs.String(), "prefetch done") {
				t.Fatalf("log:\n%s", logs.String())
			}
			if n := be.reads.Load(); n != 0 {
				t.Fatalf("%d backend reads", n)
			}
		})
	}
}
