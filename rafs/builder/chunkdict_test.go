package builder

import (
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// TestChunkDict builds a layer (alone, as registry conversion does) with
// a chunk dictionary holding one of its files: that file's chunks are not
// stored again but referenced from the dictionary's blob, which comes
// first in the layer's and the merged blob table, and the merged image
// reads the same as the layer built and merged without the dictionary.
func TestChunkDict(t *testing.T) {
	tmp := t.TempDir()
	r := rand.New(rand.NewSource(7))
	shared, fresh := make([]byte, 300<<10+17), make([]byte, 200<<10)
	r.Read(shared)
	r.Read(fresh)
	dictSrc, layerSrc := filepath.Join(tmp, "dict"), filepath.Join(tmp, "layer")
	for p, data := range map[string][]byte{
		filepath.Join(dictSrc, "lib/a"): shared, filepath.Join(dictSrc, "b"): []byte("only in the dictionary"),
		filepath.Join(layerSrc, "usr/a2"): shared, filepath.Join(layerSrc, "c"): fresh,
	} {
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, data, 0o644))
	}
	layerTar := filepath.Join(tmp, "layer.tar.gz")
	tarFromDir(t, layerSrc, layerTar, true)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"v6-zstd", Options{Compressor: CompressZstd, ChunkSize: 64 << 10}},
		{"v5-lz4", Options{FsVersion: 5, Compressor: CompressLZ4, ChunkSize: 64 << 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			blobs := filepath.Join(out, "blobs")
			dictBoot, dictID, err := BuildDir(dictSrc, blobs, tc.opts)
			must(t, err)
			merged := func(dict string) map[string]entryInfo {
				o := tc.opts
				o.ChunkDict = dict
				o.Type, o.WhiteoutSpec, o.EmptyBlob = TargzRafs, WhiteoutNone, true
				o.BlobInlineMeta = o.FsVersion != 5
				f, err := os.Open(layerTar)
				must(t, err)
				defer f.Close()
				o.Reader = f
				dir := filepath.Join(out, "l"+filepath.Base(dict))
				res, err := Build(context.Background(), "layer", filepath.Join(dir, "boot"), dir, o)
				must(t, err)
				id := res.BlobSHA256
				b, err := os.ReadFile(res.BlobPath)
				must(t, err)
				must(t, os.WriteFile(filepath.Join(blobs, id), b, 0o644))
				m, err := Merge(context.Background(), []MergeLayer{{Bootstrap: res.BootstrapPath, BlobID: id}}, filepath.Join(dir, "merged.boot"), o)
				must(t, err)
				if dict != "" {
					if len(res.BlobIDs) != 2 || res.BlobIDs[0] != dictID || res.Stats.DedupChunks != 5 {
						t.Errorf("layer with the dictionary: blobs %v, %d chunks deduplicated (want the dictionary's blob first, 5)", res.BlobIDs, res.Stats.DedupChunks)
					}
					if len(m.BlobIDs) != 2 || m.BlobIDs[0] != dictID || m.BlobIDs[1] != id {
						t.Errorf("merged blob table %v, want %s then %s", m.BlobIDs, dictID, id)
					}
				}
				return scanImage(t, m.BootstrapPath, blobs)
			}
			want := merged("")
			got := merged(dictBoot)
			compareTrees(t, want, got)
			if _, ok := got["b"]; ok || len(got) != len(want) {
				t.Errorf("the dictionary's tree leaked into the image: %d entries, want %d", len(got), len(want))
			}
		})
	}
}
