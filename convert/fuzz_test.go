package convert

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
)

func bootstrapLayerSeed(names ...string) []byte {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, n := range names {
		if strings.HasSuffix(n, "/") {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: n, Mode: 0o755})
			continue
		}
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o444, Size: 5})
		tw.Write([]byte("boot\n"))
	}
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tb.Bytes())
	zw.Close()
	return gz.Bytes()
}

// FuzzReadBootstrapLayer feeds arbitrary bytes as a bootstrap layer (gzip
// tar from a registry): no panic, a bootstrap only when one is there.
func FuzzReadBootstrapLayer(f *testing.F) {
	f.Add(bootstrapLayerSeed("image/", BootstrapPath, "image/"+strings.Repeat("a", 64)+".blob.meta"))
	f.Add(bootstrapLayerSeed("image.boot"))
	f.Add(bootstrapLayerSeed("../image/image.boot", "image/x.blob.meta"))
	f.Add([]byte{0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		bl, err := ReadBootstrapLayer(bytes.NewReader(b), 1<<20)
		if err != nil {
			return
		}
		if bl.Bootstrap == nil || len(bl.DiffID) != 64 {
			t.Fatalf("accepted without a bootstrap or diff_id: %+v", bl)
		}
		for _, id := range bl.BlobMetas {
			if len(id) != 64 {
				t.Fatalf("blob.meta id %q", id)
			}
		}
	})
}

// FuzzManifestRules parses arbitrary manifest and config bytes as a
// registry would return them and applies the manifest rules: no panic.
func FuzzManifestRules(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"layers":[{"mediaType":"`+MediaTypeNydusBlob+`","digest":"sha256:`+strings.Repeat("a", 64)+`","annotations":{"`+AnnotationNydusBlob+`":"true"}},{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:`+strings.Repeat("b", 64)+`","annotations":{"`+AnnotationNydusBootstrap+`":"true"}}]}`),
		[]byte(`{"rootfs":{"type":"layers","diff_ids":["sha256:`+strings.Repeat("a", 64)+`","sha256:`+strings.Repeat("c", 64)+`"]}}`))
	f.Add([]byte(`{"layers":[]}`), []byte(`{}`))
	f.Add([]byte(`{"layers":[{"digest":"sha256:zz"}]}`), []byte(`{"rootfs":{"diff_ids":[]}}`))
	f.Fuzz(func(t *testing.T, mb, cb []byte) {
		m, err := v1.ParseManifest(bytes.NewReader(mb))
		if err != nil {
			return
		}
		cfg, err := v1.ParseConfigFile(bytes.NewReader(cb))
		if err != nil {
			cfg = nil
		}
		ManifestProblems(m, cfg)
	})
}

// FuzzTarTree reads arbitrary bytes as a flattened source tar: entry
// names never escape the root.
func FuzzTarTree(f *testing.F) {
	f.Add(tarSeed("a/b", "../../etc/passwd", "./", "/abs"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		tree, err := TarTree(bytes.NewReader(b))
		if err != nil {
			return
		}
		for p := range tree {
			if !strings.HasPrefix(p, "/") || strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") || p == "/" {
				t.Fatalf("path %q", p)
			}
		}
	})
}

func tarSeed(names ...string) []byte {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, n := range names {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: 1})
		tw.Write([]byte("x"))
	}
	tw.Close()
	return tb.Bytes()
}

// FuzzBuildCacheRecord feeds arbitrary bytes as a build cache record
// bootstrap (gzip tar from a registry): no panic, nothing written but boot
// and blob.meta, success only with a boot.
func FuzzBuildCacheRecord(f *testing.F) {
	f.Add(bootstrapLayerSeed(cacheBoot, cacheBlobMeta))
	f.Add(bootstrapLayerSeed(cacheBlobMeta))
	f.Add(bootstrapLayerSeed("../boot"))
	f.Add([]byte{0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		err := extractRecord(bytes.NewReader(b), dir)
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.Name() != cacheBoot && e.Name() != cacheBlobMeta {
				t.Fatalf("wrote %s", e.Name())
			}
		}
		if err == nil {
			if _, serr := os.Stat(filepath.Join(dir, cacheBoot)); serr != nil {
				t.Fatalf("accepted without boot: %v", serr)
			}
		}
	})
}

// FuzzBuildCacheManifest feeds arbitrary bytes as a build cache manifest:
// no panic, and every record has a key and a sha256 blob whose digest the
// bootstrap names.
func FuzzBuildCacheManifest(f *testing.F) {
	key := strings.Repeat("k", 64)
	blob := "sha256:" + strings.Repeat("b", 64)
	f.Add([]byte(`{"schemaVersion":2,"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:` + strings.Repeat("a", 64) +
		`","size":10,"annotations":{"containerd.io/snapshot/nydus-bootstrap":"true","io.nydus-virtiofsd.build-cache.key":"` + key +
		`","containerd.io/uncompressed":"sha256:` + strings.Repeat("c", 64) + `","io.nydus-virtiofsd.build-cache.source-uncompressed":"7","io.nydus-virtiofsd.build-cache.blob":"` + blob +
		`"}},{"mediaType":"` + MediaTypeNydusBlob + `","digest":"` + blob + `","size":5,"annotations":{"io.nydus-virtiofsd.build-cache.key":"` + key + `"}}]}`))
	f.Add([]byte(`{"layers":[{"annotations":{"containerd.io/snapshot/nydus-bootstrap":"true"}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m v1.Manifest
		if json.Unmarshal(b, &m) != nil {
			return
		}
		for _, r := range parseRecords(m.Layers) {
			if r.key == "" || r.blob.Digest.Algorithm != "sha256" || r.boot.Annotations[AnnotationCacheBlob] != r.blob.Digest.String() {
				t.Fatalf("record %+v", r)
			}
		}
	})
}
