package convert

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
)

// TestConvertStorageBackend converts with --backend-type s3 (npm's s3rver)
// and localfs: the blobs land in the storage backend, the manifest holds
// only the bootstrap layer, and check, given the same backend, passes the
// blob-table and filesystem rules reading the blobs from there (and fails
// the blob-table rule without it).
func TestConvertStorageBackend(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{}).Host
	src := reg + "/src/app:v1"
	pushSource(t, src, nil)
	s3 := testsvc.StartS3(t)
	cases := []struct{ typ, config string }{
		{"s3", fmt.Sprintf(`{"scheme":"http","endpoint":%q,"region":%q,"bucket_name":%q,"object_prefix":"nydus/","access_key_id":%q,"access_key_secret":%q}`,
			s3.Endpoint, s3.Region, s3.Bucket, s3.AccessKey, s3.SecretKey)},
		{"localfs", fmt.Sprintf(`{"dir":%q}`, t.TempDir())},
	}
	for _, tc := range cases {
		t.Run(tc.typ, func(t *testing.T) {
			be, err := ParseBackend(tc.typ, []byte(tc.config))
			if err != nil {
				t.Fatal(err)
			}
			target := reg + "/dst/app:" + tc.typ
			o := Options{Source: src, Target: target, PlainHTTP: true, CacheDir: t.TempDir(), Backend: be}
			sum, err := Convert(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			img := pullImage(t, target)
			m, _ := img.Manifest()
			cfg, _ := img.ConfigFile()
			if len(m.Layers) != 1 || m.Layers[0].Annotations[AnnotationNydusBootstrap] != "true" || len(cfg.RootFS.DiffIDs) != 1 {
				t.Fatalf("manifest layers %+v, diff_ids %v: want the bootstrap layer alone", m.Layers, cfg.RootFS.DiffIDs)
			}
			up, err := backend.NewUploader(be, backend.Options{})
			if err != nil {
				t.Fatal(err)
			}
			stored := 0
			for _, l := range sum.Images[0].Layers {
				if !l.Uploaded {
					t.Errorf("layer %s: not uploaded", l.Source)
				}
				ok, err := up.Has(context.Background(), strings.TrimPrefix(l.Blob, "sha256:"), l.BlobSize)
				if err != nil || !ok {
					t.Errorf("blob %s not in the %s backend: %v", l.Blob, tc.typ, err)
				}
				stored++
			}
			if stored != 4 {
				t.Errorf("%d blobs stored, want 4", stored)
			}
			rep, err := Check(context.Background(), CheckOptions{Target: target, Source: src, PlainHTTP: true, Backend: be})
			if err != nil {
				t.Fatal(err)
			}
			if !rep.OK() || rep.FilesCompared < 20 {
				t.Fatalf("check with the %s backend (%s): %d paths, problems:\n%s", tc.typ, rep.Filesystem, rep.FilesCompared, strings.Join(rep.Problems, "\n"))
			}
			if !strings.Contains(rep.Filesystem, tc.typ+" backend") {
				t.Errorf("filesystem rule read the image through %q", rep.Filesystem)
			}
			// Without the backend the blobs are nowhere the check looks.
			rep, err = Check(context.Background(), CheckOptions{Target: target, PlainHTTP: true})
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() || !strings.Contains(strings.Join(rep.Problems, "\n"), "is not a layer of the manifest") {
				t.Errorf("check without the backend: %v", rep.Problems)
			}
			convertAgain(t, o, sum)
		})
	}
}

func TestParseBackend(t *testing.T) {
	for _, tc := range []struct {
		typ, config, err string
	}{
		{"", "", ""},
		{"registry", "", ""},
		{"registry", `{"dir":"/x"}`, "only for"},
		{"s3", "", "needs --backend-config"},
		{"s3", `{"bucket_name":"b"}`, "region"},
		{"s3", `[1]`, "not a JSON object"},
		{"oss", `{"endpoint":"e","bucket_name":"b","scheme":"ftp"}`, "scheme"},
		{"localfs", `{"dir":"/tmp/x"}`, ""},
		{"http-proxy", `{"addr":"http://x"}`, "want registry, s3, oss or localfs"},
	} {
		t.Run(tc.typ+tc.config, func(t *testing.T) {
			be, err := ParseBackend(tc.typ, []byte(tc.config))
			switch {
			case tc.err == "" && err != nil:
				t.Fatal(err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one with %q", err, tc.err)
			case tc.err == "" && (tc.typ == "" || tc.typ == "registry") != (be == nil):
				t.Fatalf("backend %+v for type %q", be, tc.typ)
			}
		})
	}
}

// TestConvertChunkDict converts an image, then converts it again into
// other repositories with the first result as chunk dictionary (a Nydus
// image in the registry, then its bootstrap as a local file): every chunk
// is found in the dictionary, so the new layer blobs hold no chunk data,
// the dictionary's blobs are layers of the new manifest, and check reads
// every file through them.
func TestConvertChunkDict(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{}).Host
	src := reg + "/src/app:v1"
	pushSource(t, src, nil)
	dictRef := reg + "/dict/app:v1"
	first, err := Convert(context.Background(), Options{Source: src, Target: dictRef, PlainHTTP: true, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var dictBlobs int64
	for _, l := range first.Images[0].Layers {
		dictBlobs += l.BlobSize
	}
	bootFile := filepath.Join(t.TempDir(), "dict.boot")
	rc, err := pullImage(t, dictRef).LayerByDigest(mustHash(t, first.Images[0].Bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := rc.Compressed()
	bl, err := ReadBootstrapLayer(r, 1<<30)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bootFile, bl.Bootstrap, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, dict, target string }{
		{"registry", "bootstrap:registry:" + dictRef, reg + "/dst/app:dict"},
		{"file", bootFile, reg + "/dict/app:again"}, // the blobs are in this repository
	} {
		t.Run(tc.name, func(t *testing.T) {
			sum, err := Convert(context.Background(), Options{Source: src, Target: tc.target, PlainHTTP: true, CacheDir: t.TempDir(), ChunkDict: tc.dict})
			if err != nil {
				t.Fatal(err)
			}
			var newBlobs int64
			for _, l := range sum.Images[0].Layers {
				newBlobs += l.BlobSize
			}
			if newBlobs*4 > dictBlobs {
				t.Errorf("new blobs hold %d bytes, the dictionary's %d: chunks stored again", newBlobs, dictBlobs)
			}
			m, _ := pullImage(t, tc.target).Manifest()
			if want := 3 + 4 + 1; len(m.Layers) != want { // 3 dictionary blobs (its 4th layer has no data)
				t.Errorf("manifest has %d layers, want %d", len(m.Layers), want)
			}
			rep := checkTarget(t, tc.target, src)
			if rep.FilesCompared < 20 {
				t.Errorf("filesystem rule compared %d paths", rep.FilesCompared)
			}
		})
	}
	// A local dictionary whose blobs are not in the target repository.
	_, err = Convert(context.Background(), Options{Source: src, Target: reg + "/elsewhere/app:v1", PlainHTTP: true, CacheDir: t.TempDir(), ChunkDict: bootFile})
	if err == nil || !strings.Contains(err.Error(), "is not in") {
		t.Errorf("local dictionary without its blobs in the target repository: %v", err)
	}
}

func mustHash(t *testing.T, s string) v1.Hash {
	t.Helper()
	h, err := v1.NewHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
