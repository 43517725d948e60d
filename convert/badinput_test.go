package convert

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
)

// pushLayers pushes an OCI image made of the given layers.
func pushLayers(t *testing.T, ref string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := name.ParseReference(ref, name.Insecure)
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	return img
}

// tagDigest is what ref points to ("" when nothing).
func tagDigest(t *testing.T, ref string) string {
	t.Helper()
	r, _ := name.ParseReference(ref, name.Insecure)
	d, err := remote.Head(r)
	if err != nil {
		return ""
	}
	return d.Digest.String()
}

func assertNoTag(t *testing.T, ref string) {
	t.Helper()
	r, _ := name.ParseReference(ref, name.Insecure)
	if d, err := remote.Head(r); err == nil {
		t.Errorf("target %s exists after a failed conversion: %s", ref, d.Digest)
	}
}

// TestConvertBadInput: each bad source fails with an error naming the
// layer (when there is one) and the reference, and no target tag appears.
func TestConvertBadInput(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{}).Host
	good := layer(t, tarBytes(t, []tarEntry{file("a", []byte("a"), 0o644)}), "gzip")
	goodDigest, _ := good.Digest()

	unsupported := static.NewLayer([]byte("whatever"), "application/vnd.example.layer.v1+foo")
	pushLayers(t, reg+"/bad/mediatype:v1", good, unsupported)
	ud, _ := unsupported.Digest()

	gz := layer(t, tarBytes(t, []tarEntry{file("big", bytes.Repeat([]byte("x"), 100000), 0o644)}), "gzip")
	raw, _ := gz.Compressed()
	var buf bytes.Buffer
	buf.ReadFrom(raw)
	corrupt := append([]byte(nil), buf.Bytes()...)
	corrupt[len(corrupt)/2] ^= 0xff
	corrupt[len(corrupt)/2+1] ^= 0xff
	corruptLayer := static.NewLayer(corrupt, types.OCILayer)
	pushLayers(t, reg+"/bad/gzip:v1", good, corruptLayer)
	cd, _ := corruptLayer.Digest()

	escape := layer(t, tarBytes(t, []tarEntry{file("../../etc/evil", []byte("x"), 0o644)}), "gzip")
	pushLayers(t, reg+"/bad/escape:v1", escape)
	ed, _ := escape.Digest()

	// A layer whose bytes do not match its digest: an OCI layout with one
	// blob file replaced.
	mismatchImg := pushLayers(t, reg+"/bad/mismatch:v1", good)
	layoutDir := filepath.Join(t.TempDir(), "layout")
	writeLayout(t, layoutDir, mismatchImg)
	other := layer(t, tarBytes(t, []tarEntry{file("b", []byte("b"), 0o644)}), "gzip")
	ob, _ := other.Compressed()
	var obuf bytes.Buffer
	obuf.ReadFrom(ob)
	if err := os.WriteFile(filepath.Join(layoutDir, "blobs", "sha256", goodDigest.Hex), obuf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		o    Options
		want []string
	}{
		{"missing", Options{Source: reg + "/bad/nothere:v1"}, []string{reg + "/bad/nothere:v1"}},
		{"mediatype", Options{Source: reg + "/bad/mediatype:v1"}, []string{"unsupported layer media type", ud.String(), reg + "/bad/mediatype:v1"}},
		{"gzip", Options{Source: reg + "/bad/gzip:v1"}, []string{cd.String(), reg + "/bad/gzip:v1"}},
		{"escape", Options{Source: reg + "/bad/escape:v1"}, []string{"escapes the root", ed.String(), reg + "/bad/escape:v1"}},
		{"digest", Options{Source: layoutDir, SourceLayout: true}, []string{"content digest", goodDigest.String(), layoutDir}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.Target, o.PlainHTTP, o.CacheDir = reg+"/out/"+tc.name+":v1", true, t.TempDir()
			_, err := Convert(context.Background(), o)
			if err == nil {
				t.Fatal("conversion succeeded")
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			assertNoTag(t, o.Target)
			// Nothing half-converted is left in the cache.
			entries, _ := filepath.Glob(filepath.Join(o.CacheDir, "layers", ".tmp-*"))
			if len(entries) > 0 {
				t.Errorf("temporary cache entries left: %v", entries)
			}
		})
	}
}

// faultInjector fails the n-th blob upload request (PATCH or PUT of a
// blob) with a 500, passing everything else to the registry.
type faultInjector struct {
	next   http.RoundTripper
	n      int64
	count  atomic.Int64
	failed atomic.Bool
}

func (f *faultInjector) RoundTrip(r *http.Request) (*http.Response, error) {
	if (r.Method == http.MethodPatch || r.Method == http.MethodPut) && strings.Contains(r.URL.Path, "/blobs/uploads/") {
		if f.count.Add(1) == f.n {
			f.failed.Store(true)
			return nil, errors.New("fault injected: connection reset during blob upload")
		}
	}
	return f.next.RoundTrip(r)
}

// TestFaultInjectorMidPush: a registry error in the middle of pushing the
// blobs fails the conversion with an error naming the target, and the
// target tag is not written (the manifest goes last).
func TestFaultInjectorMidPush(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{}).Host
	src := reg + "/src/app:v1"
	pushSource(t, src, nil)
	for _, n := range []int64{1, 3, 5} {
		t.Run(fmt.Sprint("upload-", n), func(t *testing.T) {
			fi := &faultInjector{next: http.DefaultTransport, n: n}
			target := fmt.Sprintf("%s/dst/faulty:%d", reg, n)
			// The tag already names an image; a failed conversion keeps it.
			old := pushLayers(t, target, layer(t, tarBytes(t, []tarEntry{file("old", []byte("old"), 0o644)}), "gzip"))
			oldDigest, _ := old.Digest()
			_, err := Convert(context.Background(), Options{Source: src, Target: target, PlainHTTP: true, CacheDir: t.TempDir(), Transport: fi, Jobs: 1})
			if !fi.failed.Load() {
				t.Fatalf("fault not injected (%d uploads)", fi.count.Load())
			}
			if err == nil {
				t.Fatal("conversion succeeded through an injected fault")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), reg+"/dst/faulty") {
				t.Errorf("error %q does not name the target repository", err)
			}
			if got := tagDigest(t, target); got != oldDigest.String() {
				t.Errorf("target tag moved from %s to %s", oldDigest, got)
			}
		})
	}
}

// TestCheckNydusImageFixture pushes an image built by the real nydus-image
// (the v5 fixture, whose blob is named by its sha256) as a Nydus image with
// a manifest made here, and our check accepts it; a manifest with the
// bootstrap layer's annotation missing is refused.
func TestCheckNydusImageFixture(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{}).Host
	fix := filepath.Join("..", "rafs", "testdata", "fixtures", "nydus", "v5-repeatable")
	blobID := "7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00"
	blob, err := os.ReadFile(filepath.Join(fix, "blobs", blobID))
	if err != nil {
		t.Fatalf("fixture: %v", err)
	}
	boot, err := os.ReadFile(filepath.Join(fix, "sha256-nocompress-repeatable"))
	if err != nil {
		t.Fatal(err)
	}
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "image/", Mode: 0o755})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "image/image.boot", Mode: 0o444, Size: int64(len(boot))})
	tw.Write(boot)
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tb.Bytes())
	zw.Close()
	blobLayer := static.NewLayer(blob, MediaTypeNydusBlob)
	bootLayer := static.NewLayer(gz.Bytes(), types.OCILayer)
	diffID := digestOf(tb.Bytes())
	bd, _ := blobLayer.Digest()
	if bd.Hex != blobID {
		t.Fatalf("fixture blob sha256 %s, want %s", bd.Hex, blobID)
	}
	for _, tc := range []struct {
		name     string
		bootAnno map[string]string
		ok       bool
	}{
		{"good", map[string]string{AnnotationNydusBootstrap: "true", AnnotationFsVersion: "5"}, true},
		{"no-bootstrap-annotation", map[string]string{AnnotationFsVersion: "5"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
			img, err := mutate.Append(img,
				mutate.Addendum{Layer: blobLayer, MediaType: MediaTypeNydusBlob, Annotations: map[string]string{AnnotationNydusBlob: "true"}},
				mutate.Addendum{Layer: bootLayer, MediaType: types.OCILayer, Annotations: tc.bootAnno})
			if err != nil {
				t.Fatal(err)
			}
			cfg, _ := img.ConfigFile()
			cfg = cfg.DeepCopy()
			cfg.RootFS.DiffIDs = []v1.Hash{bd, diffID}
			if img, err = mutate.ConfigFile(img, cfg); err != nil {
				t.Fatal(err)
			}
			ref := reg + "/fixture/v5:" + tc.name
			r, _ := name.ParseReference(ref, name.Insecure)
			if err := remote.Write(r, img); err != nil {
				t.Fatal(err)
			}
			rep, err := Check(context.Background(), CheckOptions{Target: ref, PlainHTTP: true})
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() != tc.ok {
				t.Errorf("check OK = %v, want %v; problems: %v", rep.OK(), tc.ok, rep.Problems)
			}
		})
	}
}
