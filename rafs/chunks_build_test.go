package rafs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"lukechampine.com/blake3"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
)

// chunksByPath reads every regular file's chunks and checks each one's
// digest against the file bytes it covers.
func chunksByPath(t *testing.T, img *rafs.Image) map[string][]rafs.Chunk {
	t.Helper()
	blobs, sup := img.Blobs(), img.Super()
	out := map[string][]rafs.Chunk{}
	err := img.Walk(func(p string, n *rafs.Inode) error {
		if !n.IsRegular() {
			return nil
		}
		data := make([]byte, n.Size)
		if k, err := img.ReadAt(context.Background(), n.Ino, data, 0); k != len(data) {
			return fmt.Errorf("%s: read %d of %d: %w", p, k, n.Size, err)
		}
		return img.Chunks(context.Background(), n.Ino, func(c rafs.Chunk) error {
			if c.FileOffset != uint64(len(out[p]))*uint64(sup.ChunkSize) || c.FileOffset+uint64(c.UncompressedSize) > n.Size {
				return fmt.Errorf("%s: chunk %+v out of place", p, c)
			}
			b := data[c.FileOffset : c.FileOffset+uint64(c.UncompressedSize)]
			d := blake3.Sum256(b)
			if blobs[c.BlobIndex].Digest == rafs.DigestSHA256 {
				d = sha256.Sum256(b)
			}
			if !c.HasDigest || d != c.Digest {
				return fmt.Errorf("%s: chunk %+v: data digest %x", p, c, d)
			}
			out[p] = append(out[p], c)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestChunksOfBuiltImages builds images with repeated data, v5 and v6,
// compressed or not, then a layer on top, and reads the chunk lists and
// blob tables back: repeated data shares chunks, the layer's copy of the
// base's data points into the base's blob, and every digest is right.
func TestChunksOfBuiltImages(t *testing.T) {
	big := make([]byte, 3<<20+100)
	for i := range big {
		big[i] = byte(i * 13 / 7)
	}
	for _, opts := range []builder.Options{
		{},
		{Compressor: builder.CompressZstd, Digester: builder.DigestSHA256, ChunkSize: 0x10000},
		{FsVersion: 5, Compressor: builder.CompressLZ4},
	} {
		version := opts.FsVersion
		if version == 0 {
			version = 6
		}
		t.Run(fmt.Sprintf("v%d-%s", version, opts.Compressor), func(t *testing.T) {
			dir := t.TempDir()
			base, top := filepath.Join(dir, "base"), filepath.Join(dir, "top")
			for _, d := range []string{base, top} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for p, data := range map[string][]byte{
				"base/big": big, "base/copy": big, "base/small": []byte("small\n"), "base/empty": nil,
				"top/again": big, "top/new": bytes.Repeat([]byte("new"), 5000),
			} {
				if err := os.WriteFile(filepath.Join(dir, p), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out := filepath.Join(dir, "out")
			baseBoot, _, err := builder.BuildDir(base, out, opts)
			if err != nil {
				t.Fatal(err)
			}
			os.Rename(baseBoot, filepath.Join(out, "base.boot"))
			opts.ParentBootstrap = filepath.Join(out, "base.boot")
			topBoot, _, err := builder.BuildDir(top, out, opts)
			if err != nil {
				t.Fatal(err)
			}
			img, err := rafs.Open(topBoot, rafs.Options{Backend: backend.NewLocalFS(out)})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			blobs := img.Blobs()
			if len(blobs) != 2 || blobs[0].ChunkCount == 0 || blobs[1].ChunkCount == 0 {
				t.Fatalf("blob table %+v", blobs)
			}
			for i, b := range blobs {
				if fi, err := os.Stat(filepath.Join(out, b.ID)); err != nil || uint64(fi.Size()) != b.CompressedSize {
					t.Errorf("blob %d: compressed size %d, file %v", i, b.CompressedSize, err)
				}
			}
			if s := img.Super(); s.Version != version || !s.ExplicitUIDGID {
				t.Errorf("super %+v", s)
			}
			// Check verifies v5 inode digests over the merged tree, and
			// every chunk of both blobs against its digest.
			if r, err := img.Check(context.Background(), rafs.CheckOptions{}); err != nil || r.Files != 6 || r.ChunksVerified == 0 || len(r.MissingBlobs) != 0 {
				t.Errorf("check: %+v, %v", r, err)
			}
			cs := chunksByPath(t, img)
			if len(cs["/empty"]) != 0 || len(cs["/small"]) != 1 || len(cs["/big"]) < 4 {
				t.Errorf("chunk counts: empty %d, small %d, big %d", len(cs["/empty"]), len(cs["/small"]), len(cs["/big"]))
			}
			for _, p := range []string{"/copy", "/again"} {
				if fmt.Sprint(cs[p]) != fmt.Sprint(cs["/big"]) {
					t.Errorf("%s does not share /big's chunks:\n%v\n%v", p, cs[p], cs["/big"])
				}
			}
			for _, c := range cs["/big"] {
				if c.BlobIndex != 0 {
					t.Errorf("/big chunk in blob %d", c.BlobIndex)
				}
			}
			if c := cs["/new"]; len(c) == 0 || c[0].BlobIndex != 1 {
				t.Errorf("/new: %+v", c)
			}
		})
	}
}
