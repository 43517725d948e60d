package storage_test

import (
	"context"
	"crypto/md5"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/api"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
)

func init() {
	storage.ChildHooks["registryfill"] = registryFillChild
}

// registryImage builds an image of files of mixed sizes, pushes its blob
// to the registry and returns the bootstrap, the files' md5s by path and
// the blob's size.
func registryImage(t *testing.T, reg *testsvc.Registry, files, version int) (string, map[string][16]byte, int64) {
	src := filepath.Join(t.TempDir(), "src")
	r := rand.New(rand.NewSource(7))
	sums := map[string][16]byte{}
	for i := range files {
		size := []int{50, 3000, 12000, 90000, 400000, 1500000}[i%6] + r.Intn(5000)
		data := make([]byte, size)
		r.Read(data[:size/2]) // half random, half zeros: compressible
		rel := fmt.Sprintf("dir%d/file%03d", i%9, i)
		os.MkdirAll(filepath.Join(src, filepath.Dir(rel)), 0o755)
		if err := os.WriteFile(filepath.Join(src, rel), data, 0o644); err != nil {
			t.Fatal(err)
		}
		sums["/"+rel] = md5.Sum(data)
	}
	out := t.TempDir()
	boot := filepath.Join(out, "image.boot")
	if _, err := builder.Build(context.Background(), src, boot, out, builder.Options{Type: builder.DirRafs,
		FsVersion: version, Compressor: builder.CompressZstd, ChunkSize: 256 << 10}); err != nil {
		t.Fatal(err)
	}
	img, err := rafs.Open(boot, rafs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ids := img.BlobIDs()
	img.Close()
	var size int64
	for _, id := range ids {
		data, err := os.ReadFile(filepath.Join(out, id))
		if err != nil {
			t.Fatal(err)
		}
		// A v6 blob id skips the digest array (as nydus-image's does), so
		// it is not the sha256 of the file: seed it under its id.
		reg.SeedBlob(t, id, data)
		size += int64(len(data))
	}
	return boot, sums, size
}

func registryConfig(host, repo, auth, cacheDir string) string {
	return fmt.Sprintf(`{"version":2,"backend":{"type":"registry","registry":{"scheme":"http","host":%q,"repo":%q,"auth":%q,"timeout":5}},`+
		`"cache":{"type":"blobcache","filecache":{"work_dir":%q}},"rafs":{"batch_size":262144}}`, host, repo, auth, cacheDir)
}

func openRegistryImage(t testing.TB, boot, config string, pool *storage.Pool) (*rafs.Image, func() error) {
	cfg, err := backend.ParseConfig([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	img, closeImg, err := api.OpenRafs(boot, cfg, pool, nil, logrus.NewEntry(log))
	if err != nil {
		t.Fatal(err)
	}
	return img, closeImg
}

// readFile reads path from img.
func readFile(img *rafs.Image, path string) ([]byte, error) {
	ino := uint64(rafs.RootIno)
	var size uint64
	for _, name := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		n, err := img.Lookup(ino, name)
		if err != nil {
			return nil, err
		}
		ino, size = n.Ino, n.Size
	}
	buf := make([]byte, size)
	n, err := img.ReadAt(context.Background(), ino, buf, 0)
	if err != nil && err != io.EOF {
		return nil, err
	}
	return buf[:n], nil
}

func checkAll(t *testing.T, img *rafs.Image, sums map[string][16]byte) {
	t.Helper()
	paths := make([]string, 0, len(sums))
	for p := range sums {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		data, err := readFile(img, p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if md5.Sum(data) != sums[p] {
			t.Fatalf("%s: md5 differs", p)
		}
	}
}

// TestRegistryLazyCache serves an image from a real docker-registry
// through the blob cache: one small file fetches a small fraction of the
// blob, every file's md5 matches, and a second mount with the registry
// unreachable reads everything from the cache.
func TestRegistryLazyCache(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthBasic})
	for _, version := range []int{6, 5} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			boot, sums, blobSize := registryImage(t, reg, 120, version)
			cacheDir := t.TempDir()
			pool := storage.NewPool(nil)
			img, closeImg := openRegistryImage(t, boot, registryConfig(reg.Host, reg.Repo, reg.AuthB64(), cacheDir), pool)
			if _, err := readFile(img, "/dir0/file000"); err != nil {
				t.Fatal(err)
			}
			one := int64(pool.BackendMetrics().ReadAmountTotal)
			if one*20 > blobSize {
				t.Fatalf("one 50-byte file fetched %d of %d blob bytes", one, blobSize)
			}
			t.Logf("one small file: %d of %d blob bytes from the registry", one, blobSize)
			checkAll(t, img, sums)
			all := int64(pool.BackendMetrics().ReadAmountTotal)
			t.Logf("every file: %d bytes from the registry for a %d-byte blob", all, blobSize)
			if all > blobSize*11/10 {
				t.Fatalf("fetched %d bytes for a %d-byte blob", all, blobSize)
			}
			closeImg()
			pool.Close()

			// The registry is gone (nothing listens at the address any more).
			dead := fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t))
			pool2 := storage.NewPool(nil)
			defer pool2.Close()
			img2, close2 := openRegistryImage(t, boot, registryConfig(dead, reg.Repo, reg.AuthB64(), cacheDir), pool2)
			defer close2()
			checkAll(t, img2, sums)
			if n := pool2.BackendMetrics().ReadCount; n != 0 {
				t.Fatalf("%d backend reads with everything cached", n)
			}
		})
	}
}

// registryFillChild reads every file of the image the environment names
// through the registry and a blob cache, slowly, until it is killed.
func registryFillChild() error {
	cfg, err := backend.ParseConfig([]byte(os.Getenv("CONFIG")))
	if err != nil {
		return err
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	img, _, err := api.OpenRafs(os.Getenv("BOOT"), cfg, storage.NewPool(nil), nil, logrus.NewEntry(log))
	if err != nil {
		return err
	}
	for _, p := range strings.Split(os.Getenv("FILES"), ",") {
		if _, err := readFile(img, p); err != nil {
			return err
		}
		time.Sleep(25 * time.Millisecond)
	}
	select {}
}

// TestRegistryKill9DuringFill kills a process filling the cache from the
// registry, then reads every file through a new one with the same cache.
func TestRegistryKill9DuringFill(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{})
	boot, sums, blobSize := registryImage(t, reg, 90, 6)
	var paths []string
	for p := range sums {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	// The child reads for about 2.5 s and its cache syncs and marks chunks
	// once a second: killed before, during and after the fill.
	for _, after := range []time.Duration{300 * time.Millisecond, 1500 * time.Millisecond, 4 * time.Second} {
		t.Run(after.String(), func(t *testing.T) {
			cacheDir := t.TempDir()
			config := registryConfig(reg.Host, reg.Repo, "", cacheDir)
			storage.KillChildAfter(t, "registryfill", after, "CONFIG="+config, "BOOT="+boot, "FILES="+strings.Join(paths, ","))
			maps, _ := filepath.Glob(filepath.Join(cacheDir, "*.chunk_map"))
			pool := storage.NewPool(nil)
			defer pool.Close()
			img, closeImg := openRegistryImage(t, boot, config, pool)
			defer closeImg()
			checkAll(t, img, sums)
			refill := int64(pool.BackendMetrics().ReadAmountTotal)
			t.Logf("killed after %v (%d chunk maps): %d of %d blob bytes survived", after, len(maps), blobSize-refill, blobSize)
		})
	}
}
