package convert

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
)

// cacheManifest is the build cache image's manifest at ref.
func cacheManifest(t *testing.T, ref string) v1.Manifest {
	t.Helper()
	r, _ := name.ParseReference(ref, name.Insecure)
	d, err := remote.Get(r)
	if err != nil {
		t.Fatalf("build cache %s: %v", ref, err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(d.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// layerOrigins says, per layer of a one-image summary, where it came
// from: "converted", "local" (layer cache) or "build-cache".
func layerOrigins(t *testing.T, sum *Summary) []string {
	t.Helper()
	if len(sum.Images) != 1 {
		t.Fatalf("summary: %d images", len(sum.Images))
	}
	var out []string
	for _, l := range sum.Images[0].Layers {
		switch {
		case l.Cached && l.BuildCache:
			t.Errorf("layer %s: both caches", l.Source)
		case l.Cached:
			out = append(out, "local")
		case l.BuildCache:
			out = append(out, "build-cache")
		default:
			out = append(out, "converted")
		}
	}
	return out
}

func wantOrigins(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: layers %v, want %v", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("%s: layers %v, want %v", what, got, want)
			return
		}
	}
}

// TestConvertBuildCache converts through Debian's docker-registry with a
// build cache image (--build-cache): a second conversion with an empty
// local layer cache (another machine) takes every layer from the cache
// image and converts none, and its result passes Check with the source;
// other build settings or another cache version reuse nothing; max-records
// keeps the newest records; a record whose blob is gone from the cache
// repository is converted again.
func TestConvertBuildCache(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{})
	src := reg.Host + "/src/app:v1"
	pushSource(t, src, nil)
	convert := func(t *testing.T, o Options) *Summary {
		t.Helper()
		o.Source, o.PlainHTTP, o.CacheDir = src, true, t.TempDir() // empty local cache: another machine
		sum, err := Convert(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		if sum.BuildCacheError != "" {
			t.Errorf("build cache not written: %s", sum.BuildCacheError)
		}
		return sum
	}
	all := func(s string) []string { return []string{s, s, s, s} }
	cacheRef := reg.Host + "/cache/app:nydus-cache"

	t.Run("reuse", func(t *testing.T) {
		first := convert(t, Options{Target: reg.Host + "/dst/a:v1", BuildCache: cacheRef})
		wantOrigins(t, "first conversion", layerOrigins(t, first), all("converted")...)
		m := cacheManifest(t, cacheRef)
		if len(m.Layers) != 8 || m.Annotations[AnnotationBuildCache] != DefaultBuildCacheVersion {
			t.Fatalf("cache manifest: %d layers, annotations %v; want 8 layers, version %s", len(m.Layers), m.Annotations, DefaultBuildCacheVersion)
		}
		target := reg.Host + "/dst/b:v1"
		second := convert(t, Options{Target: target, BuildCache: cacheRef})
		wantOrigins(t, "second conversion", layerOrigins(t, second), all("build-cache")...)
		for _, l := range second.Images[0].Layers {
			if l.Uploaded {
				t.Errorf("layer %s uploaded, not mounted from the cache repository", l.Source)
			}
		}
		if second.TargetDigest != first.TargetDigest {
			t.Errorf("from the build cache: manifest %s, converted: %s", second.TargetDigest, first.TargetDigest)
		}
		checkTarget(t, target, src)
	})

	t.Run("other-settings", func(t *testing.T) {
		for _, o := range []Options{{Compressor: "lz4_block"}, {FsVersion: 5}, {ChunkSize: 0x10000}} {
			o.Target, o.BuildCache = reg.Host+"/dst/settings:v1", cacheRef
			sum := convert(t, o)
			wantOrigins(t, "other settings", layerOrigins(t, sum), all("converted")...)
		}
		// The records of every setting are kept side by side.
		if n := len(cacheManifest(t, cacheRef).Layers); n != 4*8 {
			t.Errorf("cache manifest: %d layers, want %d", n, 4*8)
		}
		sum := convert(t, Options{Target: reg.Host + "/dst/settings:v5", BuildCache: cacheRef, FsVersion: 5})
		wantOrigins(t, "v5 again", layerOrigins(t, sum), all("build-cache")...)
		checkTarget(t, reg.Host+"/dst/settings:v5", src)
	})

	t.Run("other-version", func(t *testing.T) {
		sum := convert(t, Options{Target: reg.Host + "/dst/version:v1", BuildCache: cacheRef, BuildCacheVersion: "v2"})
		wantOrigins(t, "version v2", layerOrigins(t, sum), all("converted")...)
		m := cacheManifest(t, cacheRef)
		if len(m.Layers) != 8 || m.Annotations[AnnotationBuildCache] != "v2" {
			t.Errorf("cache manifest after v2: %d layers, version %q; want 8, v2", len(m.Layers), m.Annotations[AnnotationBuildCache])
		}
		sum = convert(t, Options{Target: reg.Host + "/dst/version:v1", BuildCache: cacheRef})
		wantOrigins(t, "version v1 over a v2 cache", layerOrigins(t, sum), all("converted")...)
	})

	t.Run("max-records", func(t *testing.T) {
		ref := reg.Host + "/cache/max:c"
		o := Options{Target: reg.Host + "/dst/max:v1", BuildCache: ref, BuildCacheMaxRecords: 2}
		wantOrigins(t, "first", layerOrigins(t, convert(t, o)), all("converted")...)
		if n := len(cacheManifest(t, ref).Layers); n != 2*2 {
			t.Fatalf("cache manifest: %d layers, want 4 (2 records)", n)
		}
		// The two newest records are the image's last two layers.
		wantOrigins(t, "second", layerOrigins(t, convert(t, o)), "converted", "converted", "build-cache", "build-cache")
	})

	t.Run("blob-removed-from-registry-storage", func(t *testing.T) {
		ref := reg.Host + "/cache/gone:c"
		o := Options{Target: reg.Host + "/dst/gone:v1", BuildCache: ref}
		first := convert(t, o)
		// Unlink layer 2's blob from the cache repository in the
		// registry's storage, as a deletion there would: HEAD and GET
		// in that repository now answer 404.
		gone := first.Images[0].Layers[1].Blob
		hex := gone[len("sha256:"):]
		links, _ := filepath.Glob(filepath.Join(os.TempDir(), "*", "*", "data", "docker", "registry", "v2",
			"repositories", "cache", "gone", "_layers", "sha256", hex, "link"))
		if len(links) != 1 {
			t.Fatalf("registry storage: %d links for %s in cache/gone", len(links), gone)
		}
		if err := os.Remove(links[0]); err != nil {
			t.Fatal(err)
		}
		o.Target = reg.Host + "/dst/gone:v2"
		sum := convert(t, o)
		wantOrigins(t, "blob gone", layerOrigins(t, sum), "build-cache", "converted", "build-cache", "build-cache")
		checkTarget(t, o.Target, src)
		// The record was written again with the blob back in place.
		wantOrigins(t, "after", layerOrigins(t, convert(t, Options{Target: reg.Host + "/dst/gone:v3", BuildCache: ref})), all("build-cache")...)
	})

	t.Run("backend-refused", func(t *testing.T) {
		o := Options{Source: src, Target: reg.Host + "/dst/x:v1", BuildCache: cacheRef, PlainHTTP: true, CacheDir: t.TempDir()}
		var err error
		if o.Backend, err = ParseBackend("localfs", []byte(`{"dir":"`+t.TempDir()+`"}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := Convert(context.Background(), o); err == nil {
			t.Error("--build-cache with --backend-type localfs: no error")
		}
	})
}
