package rafs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
)

// faultInjector wraps a backend, counting reads and bytes and failing
// reads on demand (a registry going away, a transient error).
type faultInjector struct {
	backend.Backend
	reads, bytes atomic.Int64
	failReads    atomic.Int64 // fail this many reads, then recover
	down         atomic.Bool  // fail every Open and read
}

func (f *faultInjector) Open(ctx context.Context, id string) (backend.Blob, error) {
	if f.down.Load() {
		return nil, errors.New("fault injector: backend down")
	}
	b, err := f.Backend.Open(ctx, id)
	if err != nil {
		return nil, err
	}
	return &faultBlob{Blob: b, f: f}, nil
}

type faultBlob struct {
	backend.Blob
	f *faultInjector
}

func (b *faultBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if b.f.down.Load() {
		return 0, errors.New("fault injector: backend down")
	}
	if b.f.failReads.Add(-1) >= 0 {
		return 0, errors.New("fault injector: transient failure")
	}
	b.f.reads.Add(1)
	n, err := b.Blob.ReadAt(ctx, p, off)
	b.f.bytes.Add(int64(n))
	return n, err
}

// sourceTree writes a tree of files of mixed sizes and returns their
// contents by image path.
func sourceTree(t *testing.T, dir string, files int) map[string][]byte {
	r := rand.New(rand.NewSource(int64(files)))
	out := map[string][]byte{}
	for i := range files {
		size := []int{0, 100, 4000, 9000, 70000, 300000}[i%6] + r.Intn(1000)
		data := make([]byte, size)
		r.Read(data)
		if i%3 == 0 {
			copy(data, bytes.Repeat([]byte("compressible "), size/13)) // zstd has work to do
		}
		rel := fmt.Sprintf("d%d/f%d", i%7, i)
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		out["/"+rel] = data
	}
	return out
}

// readTree reads every file of want through img by path.
func readTree(t *testing.T, img *rafs.Image, want map[string][]byte) {
	t.Helper()
	paths := make([]string, 0, len(want))
	for p := range want {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		ino := uint64(rafs.RootIno)
		for _, name := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
			n, err := img.Lookup(ino, name)
			if err != nil {
				t.Fatalf("lookup %s: %v", p, err)
			}
			ino = n.Ino
		}
		got := make([]byte, len(want[p])+10)
		n, err := img.ReadAt(context.Background(), ino, got, 0)
		if err != nil && err != io.EOF {
			t.Fatalf("read %s: %v", p, err)
		}
		if !bytes.Equal(got[:n], want[p]) {
			t.Fatalf("%s: content differs", p)
		}
	}
}

func quiet() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func buildTree(t *testing.T, files int, opts builder.Options) (boot, blobDir string, want map[string][]byte) {
	src := filepath.Join(t.TempDir(), "src")
	want = sourceTree(t, src, files)
	blobDir = t.TempDir()
	boot = filepath.Join(blobDir, "image.boot")
	opts.Type = builder.DirRafs
	if _, err := builder.Build(context.Background(), src, boot, blobDir, opts); err != nil {
		t.Fatal(err)
	}
	return boot, blobDir, want
}

// TestBlobCacheServesAfterBackendGoes reads an image through a blob cache,
// then reads it again with a new cache manager (a restarted daemon) while
// the backend is down: everything comes from the cache directory.
func TestBlobCacheServesAfterBackendGoes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		opts       builder.Options
		compressed bool // cache.compressed: .blob.raw
	}{
		{"v6-none", builder.Options{ChunkSize: 64 << 10}, false},
		{"v6-zstd", builder.Options{ChunkSize: 64 << 10, Compressor: builder.CompressZstd}, false},
		{"v6-zstd-compressed-cache", builder.Options{ChunkSize: 64 << 10, Compressor: builder.CompressZstd}, true},
		{"v5-lz4", builder.Options{ChunkSize: 64 << 10, FsVersion: 5, Compressor: builder.CompressLZ4}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			boot, blobDir, want := buildTree(t, 60, tc.opts)
			cacheDir := t.TempDir()
			for round, validate := range []bool{false, true} {
				be := &faultInjector{Backend: backend.NewLocalFS(blobDir)}
				if round == 1 {
					be.down.Store(true)
				}
				m, err := storage.NewManager(storage.Options{Type: storage.TypeBlobcache, WorkDir: cacheDir, Compressed: tc.compressed, Log: quiet()})
				if err != nil {
					t.Fatal(err)
				}
				img, err := rafs.Open(boot, rafs.Options{Backend: be, Cache: m, DigestValidate: validate, Log: quiet()})
				if err != nil {
					t.Fatal(err)
				}
				readTree(t, img, want)
				img.Close()
				if err := m.Close(); err != nil {
					t.Fatal(err)
				}
				if round == 0 && be.reads.Load() == 0 {
					t.Fatal("nothing fetched")
				}
			}
			ids, _ := filepath.Glob(filepath.Join(cacheDir, "*.blob.data.chunk_map"))
			if len(ids) != 1 {
				t.Fatalf("chunk maps: %v", ids)
			}
			data := strings.TrimSuffix(ids[0], ".blob.data.chunk_map") + ".blob.data"
			if tc.compressed {
				data = strings.TrimSuffix(data, ".data") + ".raw"
			}
			if _, err := os.Stat(data); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFaultInjectorTransientMetaError: a backend error while loading a
// blob's metadata fails that read only; the next read loads it.
func TestFaultInjectorTransientMetaError(t *testing.T) {
	boot, blobDir, want := buildTree(t, 12, builder.Options{ChunkSize: 64 << 10})
	be := &faultInjector{Backend: backend.NewLocalFS(blobDir)}
	img, err := rafs.Open(boot, rafs.Options{Backend: be, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	be.failReads.Store(1)
	n, err := img.Lookup(rafs.RootIno, "d1")
	if err != nil {
		t.Fatal(err)
	}
	f, err := img.Lookup(n.Ino, "f1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.ReadAt(context.Background(), f.Ino, make([]byte, 10), 0); err == nil {
		t.Fatal("read with a failing backend succeeded")
	}
	readTree(t, img, want)
}

// TestBlobCacheLazy reads one small file of a larger image: the backend
// serves a small fraction of the blob.
func TestBlobCacheLazy(t *testing.T) {
	boot, blobDir, want := buildTree(t, 120, builder.Options{ChunkSize: 64 << 10})
	be := &faultInjector{Backend: backend.NewLocalFS(blobDir)}
	m, err := storage.NewManager(storage.Options{Type: storage.TypeBlobcache, WorkDir: t.TempDir(), BatchSize: 128 << 10, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	img, err := rafs.Open(boot, rafs.Options{Backend: be, Cache: m, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	readTree(t, img, map[string][]byte{"/d1/f1": want["/d1/f1"]})
	var total int64
	for _, b := range img.Blobs() {
		total += int64(b.CompressedSize)
	}
	if got := be.bytes.Load(); got*10 > total {
		t.Fatalf("reading one small file fetched %d of %d bytes", got, total)
	}
	t.Logf("one 100-byte file: %d of %d blob bytes fetched", be.bytes.Load(), total)
}
