package builder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestMergeMatchesLayeredBuild builds two OCI layer tars each alone
// (whiteouts kept as files, as registry conversion does, streamed through
// Options.Reader), merges their bootstraps, and wants the same tree as the
// layered build of the upper on the base (which TestLayersMatchOverlayfs
// holds against the kernel's overlayfs); the merged blob table names each
// layer's blob by the id given.
func TestMergeMatchesLayeredBuild(t *testing.T) {
	tmp := t.TempDir()
	base, upper := filepath.Join(tmp, "base"), filepath.Join(tmp, "upper")
	must(t, os.MkdirAll(base, 0o755))
	must(t, os.MkdirAll(upper, 0o755))
	baseLayer(t, base, true)
	upperLayer(t, upper, true)
	baseTar, upperTar := filepath.Join(tmp, "base.tar.gz"), filepath.Join(tmp, "upper.tar.gz")
	tarFromDir(t, base, baseTar, true)
	tarFromDir(t, upper, upperTar, true)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"v6-zstd", Options{Compressor: CompressZstd}},
		{"v6-none", Options{}},
		{"v5-lz4", Options{FsVersion: 5, Compressor: CompressLZ4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			// Reference: the layered build.
			ref := tc.opts
			ref.Type = TargzRafs
			b0, err := Build(context.Background(), baseTar, filepath.Join(out, "ref-base.boot"), out, ref)
			must(t, err)
			ref.ParentBootstrap = b0.BootstrapPath
			b1, err := Build(context.Background(), upperTar, filepath.Join(out, "ref-top.boot"), out, ref)
			must(t, err)
			want := scanImage(t, b1.BootstrapPath, out)

			// Each layer alone, then merged.
			must(t, os.MkdirAll(filepath.Join(out, "merged-blobs"), 0o755))
			var layers []MergeLayer
			for i, src := range []string{baseTar, upperTar} {
				f, err := os.Open(src)
				must(t, err)
				o := tc.opts
				o.Type, o.Reader, o.WhiteoutSpec, o.EmptyBlob = TargzRafs, f, WhiteoutNone, true
				o.BlobInlineMeta = o.FsVersion != 5
				dir := filepath.Join(out, "layer", strconv.Itoa(i))
				o.BlobPath = filepath.Join(dir, "blob")
				res, err := Build(context.Background(), "layer", filepath.Join(dir, "boot"), dir, o)
				f.Close()
				must(t, err)
				b, err := os.ReadFile(res.BlobPath)
				must(t, err)
				sum := sha256.Sum256(b)
				id := hex.EncodeToString(sum[:])
				must(t, os.WriteFile(filepath.Join(out, "merged-blobs", id), b, 0o644))
				layers = append(layers, MergeLayer{Bootstrap: res.BootstrapPath, BlobID: id})
			}
			merged := filepath.Join(out, "merged.boot")
			res, err := Merge(context.Background(), layers, merged, tc.opts)
			must(t, err)
			if len(res.BlobIDs) != 2 || res.BlobIDs[0] != layers[0].BlobID || res.BlobIDs[1] != layers[1].BlobID {
				t.Fatalf("merged blob table %v, want the layer ids", res.BlobIDs)
			}
			compareTrees(t, want, scanImage(t, merged, filepath.Join(out, "merged-blobs")))
		})
	}
}

// TestMergeRefusesMismatch: layers must share the RAFS version.
func TestMergeRefusesMismatch(t *testing.T) {
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	must(t, os.MkdirAll(src, 0o755))
	baseLayer(t, src, true)
	boot, _, err := BuildDir(src, filepath.Join(tmp, "out"), Options{FsVersion: 5})
	must(t, err)
	if _, err := Merge(context.Background(), []MergeLayer{{Bootstrap: boot, BlobID: "x"}}, filepath.Join(tmp, "m.boot"), Options{}); err == nil {
		t.Fatal("merged a v5 layer into a v6 image")
	}
}
