package rafs

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fileChunks collects the chunks of every regular file, by path.
func fileChunks(t *testing.T, img *Image) map[string][]Chunk {
	t.Helper()
	out := map[string][]Chunk{}
	err := img.Walk(func(p string, n *Inode) error {
		if !n.IsRegular() {
			return nil
		}
		var cs []Chunk
		err := img.Chunks(context.Background(), n.Ino, func(c Chunk) error { cs = append(cs, c); return nil })
		out[p] = cs
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkChunks checks that each file's chunks tile it in chunk-size steps,
// name valid blobs and, where the blobs are present, that each chunk's
// digest is the digest of the file bytes it covers.
func checkChunks(t *testing.T, img *Image, chunks map[string][]Chunk, withData bool) {
	t.Helper()
	sup, blobs := img.Super(), img.Blobs()
	for p, cs := range chunks {
		n := lookupPath(t, img, p)
		var data []byte
		if withData {
			data = readAll(t, img, n)
		}
		if want := (n.Size + uint64(sup.ChunkSize) - 1) / uint64(sup.ChunkSize); uint64(len(cs)) != want {
			t.Errorf("%s: %d chunks for %d bytes, want %d", p, len(cs), n.Size, want)
			continue
		}
		for k, c := range cs {
			want := min(uint64(sup.ChunkSize), n.Size-uint64(k)*uint64(sup.ChunkSize))
			if c.FileOffset != uint64(k)*uint64(sup.ChunkSize) || uint64(c.UncompressedSize) != want ||
				int(c.BlobIndex) >= len(blobs) || c.Hole || !c.HasDigest {
				t.Errorf("%s chunk %d: %+v", p, k, c)
				continue
			}
			if sup.Version == 6 && c.UncompressedOffset%4096 != 0 {
				t.Errorf("%s chunk %d: unaligned uncompressed offset %#x", p, k, c.UncompressedOffset)
			}
			if (!c.Compressed && c.CompressedSize != c.UncompressedSize) || (c.Compressed && blobs[c.BlobIndex].Compression == CompressNone) {
				t.Errorf("%s chunk %d: compressed %v with sizes %d/%d", p, k, c.Compressed, c.CompressedSize, c.UncompressedSize)
			}
			if withData {
				d, err := digest(blobs[c.BlobIndex].Digest, data[c.FileOffset:c.FileOffset+uint64(c.UncompressedSize)])
				if err != nil || d != c.Digest {
					t.Errorf("%s chunk %d: digest %x, the data hashes to %x (%v)", p, k, c.Digest, d, err)
				}
			}
		}
	}
}

// TestChunksFixtures reads every file's chunk list from nydus's images,
// with and without their blobs, and checks it against the data.
func TestChunksFixtures(t *testing.T) {
	for _, tc := range []struct {
		boot, blobs string
		version     int
		files       int
	}{
		{"nydus/v6-2.2/rafs-v6-2.2.boot", "nydus/v6-2.2", 6, 2},
		{"nydus/v5-repeatable/sha256-nocompress-repeatable", "nydus/v5-repeatable/blobs", 5, 0},
		{"nydus/v5-repeatable/blake3-lz4_block-non_repeatable", "nydus/v5-repeatable/blobs", 5, 0},
	} {
		t.Run(filepath.Base(tc.boot), func(t *testing.T) {
			bare := openFixture(t, fx(tc.boot), "", Options{})
			withBlobs := openFixture(t, fx(tc.boot), fx(tc.blobs), Options{})
			if v := bare.Super().Version; v != tc.version {
				t.Fatalf("version %d", v)
			}
			a, b := fileChunks(t, bare), fileChunks(t, withBlobs)
			if tc.files != 0 && len(a) != tc.files {
				t.Errorf("%d files, want %d", len(a), tc.files)
			}
			if len(a) == 0 {
				t.Fatal("no regular files")
			}
			// The bootstrap's chunk table and the blob's ci and digest
			// arrays must say the same (but for the flags: v5 chunk
			// flags in the table, none in a v1 ci array).
			for p, cs := range a {
				for k := range cs {
					if k < len(b[p]) && tc.version == 6 {
						b[p][k].Flags = cs[k].Flags
					}
					if k >= len(b[p]) || cs[k] != b[p][k] {
						t.Errorf("%s chunk %d: bootstrap says %+v, blob says %+v", p, k, cs[k], b[p])
						break
					}
				}
			}
			checkChunks(t, withBlobs, b, true)
		})
	}
}

// TestChunksSnapshotter checks the new API against the values
// PROVENANCE.md §6 lists for nydus-snapshotter's real-world bootstraps.
func TestChunksSnapshotter(t *testing.T) {
	v6, err := snapshotterBoot(t, "v6-bootstrap-chunk-pos-438272.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	v5, err := snapshotterBoot(t, "v5-bootstrap-file-size-736032.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		data  []byte
		super SuperInfo
		blob  BlobInfo
	}{
		{"v6", v6, SuperInfo{Version: 6, Flags: 0x6, ChunkSize: 1 << 20, Compression: CompressLZ4, Digest: DigestBlake3},
			BlobInfo{ID: "cdde6f5645daea414d60bc75611102a8bc8dae6198f087366365d6ff85bf5726", Features: 1,
				Compression: CompressLZ4, Digest: DigestBlake3, ChunkSize: 1 << 20, ChunkCount: 2515,
				CompressedSize: 43090887, UncompressedSize: 83767296, CICompression: CompressLZ4,
				CIOffset: 43090887, CICompressedSize: 35949, CIUncompressedSize: 40240, DeviceBlocks: 20451}},
		{"v5", v5, SuperInfo{Version: 5, Flags: 0x16, ChunkSize: 1 << 20, Compression: CompressLZ4, Digest: DigestBlake3, ExplicitUIDGID: true},
			BlobInfo{ID: "02fef4a13a311de4adc5b34ca152d3a87c9371c76a5f720451c8b9602859b780",
				Compression: CompressLZ4, Digest: DigestBlake3, ChunkSize: 1 << 20, ChunkCount: 2515,
				CompressedSize: 43090887, UncompressedSize: 77298891}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := OpenBytes(tc.data, "image.boot", Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			if got := img.Super(); got != tc.super {
				t.Errorf("super %+v, want %+v", got, tc.super)
			}
			if got := img.Blobs(); len(got) != 1 || got[0] != tc.blob {
				t.Errorf("blobs %+v, want %+v", got, tc.blob)
			}
			all := fileChunks(t, img)
			if len(all) != 2627 {
				t.Errorf("%d regular files, want 2627", len(all))
			}
			checkChunks(t, img, all, false)
			bash := all["/usr/bin/bash"]
			if len(bash) != 2 || bash[1].UncompressedSize != 1396520-1<<20 || bash[0].Index == bash[1].Index {
				t.Errorf("/usr/bin/bash: %+v", bash)
			}
			// Hard links have the same chunks (in v6 they are separate
			// inodes reported under one inode number).
			if p, q := all["/usr/bin/perl"], all["/usr/bin/perl5.34.0"]; len(p) != 4 || len(q) != 4 || p[3] != q[3] {
				t.Errorf("perl hard links: %+v / %+v", p, q)
			}
			var chunks, seen = 0, map[uint32]bool{}
			for _, cs := range all {
				for _, c := range cs {
					chunks++
					seen[c.Index] = true
				}
			}
			// Every chunk of the blob is used, some by several files.
			if len(seen) != 2515 || chunks < 2515 {
				t.Errorf("%d chunk references to %d distinct chunks, want 2515 distinct", chunks, len(seen))
			}
		})
	}
	// The snapshotter's truncated copy (cut at the chunk table) still
	// opens, but without blobs the v6 chunk info is nowhere to be found.
	img, err := OpenBytes(v6[:438272], "image.boot", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	n := lookupPath(t, img, "/usr/bin/bash")
	err = img.Chunks(context.Background(), n.Ino, func(Chunk) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "no chunk info") {
		t.Errorf("chunks without a chunk table: %v", err)
	}
}

// TestChunksErrors covers the calls that must fail, and a callback error.
func TestChunksErrors(t *testing.T) {
	img := openFixture(t, fx("nydus/v6-2.2/rafs-v6-2.2.boot"), "", Options{})
	noop := func(Chunk) error { return nil }
	if err := img.Chunks(context.Background(), RootIno, noop); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("chunks of a directory: %v", err)
	}
	if err := img.Chunks(context.Background(), 1<<40, noop); err == nil {
		t.Error("chunks of a missing inode succeeded")
	}
	n := lookupPath(t, img, "lib.rs")
	stop := errors.New("stop")
	if err := img.Chunks(context.Background(), n.Ino, func(Chunk) error { return stop }); err != stop {
		t.Errorf("callback error came back as %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := img.Chunks(ctx, n.Ino, noop); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
}

// TestChunksPlainEROFS lists the chunks of a mkfs.erofs image: raw data at
// block addresses of the extra device, and no digests.
func TestChunksPlainEROFS(t *testing.T) {
	img, err := Open(fx("erofs-utils/meta.img"), Options{AllowPlainEROFS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if s := img.Super(); !s.PlainEROFS || s.Version != 6 || s.Compression != CompressNone {
		t.Errorf("super %+v", s)
	}
	var got []Chunk
	n := lookupPath(t, img, "dir1/big.bin")
	if err := img.Chunks(context.Background(), n.Ino, func(c Chunk) error { got = append(got, c); return nil }); err != nil {
		t.Fatal(err)
	}
	var covered uint64
	for _, c := range got {
		if c.HasDigest || c.Compressed || c.BlobIndex != 0 || c.FileOffset != covered {
			t.Errorf("chunk %+v", c)
		}
		covered += uint64(c.UncompressedSize)
	}
	if covered != n.Size {
		t.Errorf("chunks cover %d of %d bytes", covered, n.Size)
	}
}
