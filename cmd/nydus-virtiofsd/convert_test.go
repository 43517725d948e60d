package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/convert"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
)

// TestConvertCommand runs `convert` and `check --target` as a user types
// them against a real registry: the summary JSON, the check of the result
// against its source (FUSE mount over the registry backend), a check of
// an image that is not Nydus failing, and flag errors.
func TestConvertCommand(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{}).Host
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/motd", Mode: 0o644, Size: 6})
	tw.Write([]byte("hello\n"))
	tw.Close()
	img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON),
		static.NewLayer(tb.Bytes(), types.OCIUncompressedLayer))
	if err != nil {
		t.Fatal(err)
	}
	src := reg + "/cli/app:v1"
	ref, _ := name.ParseReference(src, name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sumPath := filepath.Join(dir, "summary.json")
	if rc := runConvert([]string{"--source", src, "--target-suffix", "-nydus", "--plain-http", "--work-dir", filepath.Join(dir, "cache"),
		"--output-json", sumPath, "--compressor", "lz4_block", "--chunk-size", "0x10000"}); rc != 0 {
		t.Fatalf("convert exit %d", rc)
	}
	b, err := os.ReadFile(sumPath)
	if err != nil {
		t.Fatal(err)
	}
	var sum convert.Summary
	if err := json.Unmarshal(b, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Target != src+"-nydus" || len(sum.Images) != 1 || len(sum.Images[0].Layers) != 1 || !strings.HasPrefix(sum.TargetDigest, "sha256:") {
		t.Errorf("summary %s", b)
	}
	repPath := filepath.Join(dir, "check.json")
	if rc := runCheck([]string{"--target", src + "-nydus", "--source", src, "--plain-http", "--output-json", repPath}); rc != 0 {
		t.Fatalf("check exit %d", rc)
	}
	var rep convert.CheckReport
	if b, err = os.ReadFile(repPath); err == nil {
		err = json.Unmarshal(b, &rep)
	}
	if err != nil || rep.FilesCompared != 2 || !rep.OK() {
		t.Errorf("check report %s (%v)", b, err)
	}
	if rc := runCheck([]string{"--target", src, "--plain-http"}); rc != 1 {
		t.Errorf("check of an OCI image: exit %d, want 1", rc)
	}
	for _, args := range [][]string{
		{"--source", src}, // no target
		{"--source", src, "--target", src + "-x", "--fs-version", "4"}, // bad version
		{"--source", src, "--target", src + "-x", "--compressor", "gzip"},
		{"--source", src, "--source-archive", "x.tar", "--target", src + "-x"},
	} {
		if rc := runConvert(append(args, "--plain-http", "--work-dir", filepath.Join(dir, "cache"))); rc == 0 {
			t.Errorf("convert %v succeeded", args)
		}
	}
}
