package builder

import (
	"bytes"
	"fmt"

	"context"
	"encoding/binary"
	"github.com/klauspost/compress/zstd"
	"os"
	"path/filepath"
	"testing"
)

// TestBlobInlineMeta opens the blob itself as the image, the way nydusd
// does with an inlined bootstrap.
func TestBlobInlineMeta(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	makeSource(t, src)
	want := scanTree(t, src)
	for _, opts := range []Options{{BlobInlineMeta: true}, {BlobInlineMeta: true, Compressor: CompressZstd}} {
		out := t.TempDir()
		res, err := Build(context.Background(), src, filepath.Join(out, "boot"), out, opts)
		if err != nil {
			t.Fatal(err)
		}
		blob, _ := os.ReadFile(res.BlobPath)
		toc := checkNativeBlob(t, "inline blob", blob, res.BlobID)
		if toc[len(toc)-1].name != "image.boot" {
			t.Fatalf("ToC %+v has no image.boot last", toc)
		}
		// the blob file as the bootstrap; its id comes from its name
		compareTrees(t, want, scanImage(t, res.BlobPath, out))
	}
}

// TestPrefetchTable checks that the listed paths land in the prefetch
// table, as nids (v6) or inode numbers (v5).
func TestPrefetchTable(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	makeSource(t, src)
	le := binary.LittleEndian
	for _, v := range []int{6, 5} {
		out := t.TempDir()
		res, err := Build(context.Background(), src, filepath.Join(out, "boot"), out,
			Options{FsVersion: v, PrefetchFiles: []string{"/big.bin", "/odd/"}})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(res.BootstrapPath)
		var sizes []uint64
		var names []string
		if v == 6 {
			ext := b[1152:]
			off, size := le.Uint64(ext[40:]), le.Uint32(ext[48:])
			if size != 8 {
				t.Fatalf("v6 prefetch table size %d, want 8", size)
			}
			meta := uint64(le.Uint32(b[1024+40:])) * 4096
			for i := uint64(0); i < 2; i++ {
				nid := uint64(le.Uint32(b[off+4*i:]))
				in := b[meta+nid*32:]
				sizes = append(sizes, uint64(le.Uint16(in[4:])))
				sizes = append(sizes, le.Uint64(in[8:]))
			}
			if sizes[0]&0o170000 != 0o100000 || sizes[1] != 3<<20+12345 || sizes[2]&0o170000 != 0o040000 {
				t.Errorf("v6 prefetch entries point at %v", sizes)
			}
			continue
		}
		off, n := le.Uint64(b[40:]), le.Uint32(b[60:])
		if n != 2 {
			t.Fatalf("v5 prefetch entries %d, want 2", n)
		}
		for i := uint64(0); i < 2; i++ {
			ino := le.Uint32(b[off+4*i:])
			o := uint64(le.Uint32(b[8192+4*(ino-1):])) << 3
			names = append(names, string(b[o+128:o+128+uint64(le.Uint16(b[o+100:]))]))
		}
		if names[0] != "big.bin" || names[1] != "odd" {
			t.Errorf("v5 prefetch entries name %v", names)
		}
	}
	out := t.TempDir()
	if _, err := Build(context.Background(), src, filepath.Join(out, "boot"), out, Options{PrefetchFiles: []string{"/nope"}}); err == nil {
		t.Error("a prefetch path missing from the image was accepted")
	}
}

// TestWhiteoutSpecNone keeps whiteout-looking entries as they are.
func TestWhiteoutSpecNone(t *testing.T) {
	src := t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, ".wh.x"), nil, 0o644))
	must(t, os.WriteFile(filepath.Join(src, whiteoutOpaque), nil, 0o644))
	want := scanTree(t, src)
	out := t.TempDir()
	boot, _, err := BuildDir(src, out, Options{WhiteoutSpec: WhiteoutNone})
	must(t, err)
	compareTrees(t, want, scanImage(t, boot, out))
	if _, _, err := BuildDir(src, out, Options{WhiteoutSpec: "aufs"}); err == nil {
		t.Error("an unknown whiteout spec was accepted")
	}
}

// TestBlobInlineMetaSettles builds inline-meta blobs over many slightly
// different trees. The bootstrap records the blob's size while being
// compressed into that blob, so some inputs made a naive fixed-point
// iteration oscillate forever; every build must settle and read back.
func TestBlobInlineMetaSettles(t *testing.T) {
	for i := 0; i < 40; i++ {
		src := filepath.Join(t.TempDir(), "src")
		if err := os.MkdirAll(filepath.Join(src, "d"), 0o755); err != nil {
			t.Fatal(err)
		}
		for j := 0; j <= i%7; j++ {
			data := make([]byte, 100*i+37*j+1)
			for k := range data {
				data[k] = byte(k*j + i)
			}
			if err := os.WriteFile(filepath.Join(src, "d", fmt.Sprintf("f%02d-%d", i, j)), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want := scanTree(t, src)
		comp := CompressNone
		if i%2 == 1 {
			comp = CompressZstd
		}
		out := t.TempDir()
		res, err := Build(context.Background(), src, filepath.Join(out, "boot"), out, Options{BlobInlineMeta: true, Compressor: comp})
		if err != nil {
			t.Fatalf("tree %d: %v", i, err)
		}
		compareTrees(t, want, scanImage(t, res.BlobPath, out))
	}
}

func TestSkippableFramePadding(t *testing.T) {
	c, err := newCompressor(CompressZstd)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("bootstrap "), 500)
	for _, pad := range []int{skippableFrameMin, 9, 4096} {
		z := appendSkippableFrame(c.zenc.EncodeAll(want, nil), pad)
		got, err := zstd.NewReader(nil)
		if err != nil {
			t.Fatal(err)
		}
		out, err := got.DecodeAll(z, nil)
		got.Close()
		if err != nil || !bytes.Equal(out, want) {
			t.Fatalf("pad %d: decode = %d bytes, %v", pad, len(out), err)
		}
	}
}
