package rafs

import (
	"bytes"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

func TestParseTOCFixture(t *testing.T) {
	blob := readFixture(t, filepath.Join(v6Dir, v6BlobID))
	ents, size, dig, err := ParseTOC(blob[len(blob)-1024:])
	if err != nil {
		t.Fatal(err)
	}
	if size != 1024 || hex.EncodeToString(dig[:]) != "cfc89ed0739aef4eb1bf0904f0dfdb1c857134eca7319465baae95a99b84acde" {
		t.Errorf("size %d digest %x", size, dig)
	}
	want := []struct {
		name      string
		off, size uint64
		sum       string
	}{
		{"image.blob", 7802, 7802, "632d11c76e652544684d73053a4656d3cca2c693539bd4bae5ea226355cfdd1d"},
		{"blob.meta", 8314, 32, "cae7cc4bc024ca68bd0c4f5c9cdf612d6cb9622271d787c8c79ccba91852b6b1"},
		{"blob.meta.header", 8346, 4096, "1a4559316dbcfca5ff8cd1f005172a429a9e9f6b885bfda6a43cf4098a4f8db1"},
		{"blob.digest", 12954, 64, "910f7305f347bacd48d1221e0fb91c6af903f34eddcfc124004f3c5ff7e8bfdd"},
	}
	if len(ents) != len(want) {
		t.Fatalf("%d entries", len(ents))
	}
	for i, w := range want {
		e := ents[i]
		if e.Name != w.name || e.CompressedOffset != w.off || e.CompressedSize != w.size || hex.EncodeToString(e.SHA256[:]) != w.sum || e.Flags != tocCompressNone {
			t.Errorf("entry %d: %+v", i, e)
		}
	}
	// A ToC found without knowing its size (the last 4096 bytes).
	if ents2, _, _, err := ParseTOC(blob[len(blob)-4096:]); err != nil || len(ents2) != 4 {
		t.Errorf("toc from a 4 KiB tail: %d entries, %v", len(ents2), err)
	}
	// Damage: checksum, name, size.
	for name, mut := range map[string]func(b []byte){
		"bad checksum": func(b []byte) { b[len(b)-512+148] ^= 1 },
		"bad name":     func(b []byte) { b[len(b)-512] = 'X' },
		"short":        func(b []byte) {},
	} {
		tail := bytes.Clone(blob[len(blob)-1024:])
		mut(tail)
		if name == "short" {
			tail = tail[:300]
		}
		if _, _, _, err := ParseTOC(tail); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestCIArrays(t *testing.T) {
	blob := readFixture(t, filepath.Join(v6Dir, v6BlobID))
	h, err := ParseBlobMetaHeader(blob[8346 : 8346+4096])
	if err != nil || h.CIEntries != 2 || h.CIOffset != 8314 || h.CICompressedSize != 32 || h.Features != 0x70000021 {
		t.Fatalf("v6 blob.meta header %+v, %v", h, err)
	}
	a, err := NewCIArray(blob[8314:8346], 2, false)
	if err != nil {
		t.Fatal(err)
	}
	ci, err := a.Get(1)
	if err != nil || ci.UncompressedOffset != 20480 || ci.UncompressedSize != 13400 || ci.CompressedOffset != 4828 || ci.CompressedSize != 2974 || !ci.Compressed {
		t.Errorf("v1 ci[1] = %+v, %v", ci, err)
	}
	if _, err := a.Get(2); err == nil {
		t.Error("ci[2] of 2")
	}

	zr := readFixture(t, fx("nydus/zran-blob-meta/233c72f2b6b698c07021c4da367cfe2dff4f049efbaa885ca0ff760ea297865a.blob.meta"))
	zh, err := ParseBlobMetaHeader(zr[len(zr)-4096:])
	if err != nil || zh.CIEntries != 163 || zh.Features != 0xF || zh.CIUncompSize != 0xA1290 || zh.ZranOffset != 0xF48 || zh.ZranSize != 0xA0348 || zh.ZranCount != 21 {
		t.Fatalf("zran header %+v, %v", zh, err)
	}
	za, err := NewCIArray(zr[:zh.CIUncompSize], zh.CIEntries, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		i                   uint32
		uoff, coff          uint64
		usize, csize, flags uint32
	}{
		{0, 0, 0xB8, 1404, 649, 0x03},
		{162, 0x16C5000, 0x962146, 364, 102, 0x03},
	} {
		ci, err := za.Get(w.i)
		if err == nil || !strings.Contains(err.Error(), "zran") {
			t.Errorf("zran ci %d: err %v, want a not-supported error", w.i, err)
		}
		if ci.UncompressedOffset != w.uoff || ci.CompressedOffset != w.coff || ci.UncompressedSize != w.usize || ci.CompressedSize != w.csize || ci.Flags != w.flags {
			t.Errorf("v2 ci[%d] = %+v", w.i, ci)
		}
	}
	if _, err := NewCIArray(zr[:100], 163, true); err == nil {
		t.Error("a 163-entry v2 array in 100 bytes")
	}
	bad := bytes.Clone(zr[len(zr)-4096:])
	bad[4092] ^= 1
	if _, err := ParseBlobMetaHeader(bad); err == nil {
		t.Error("blob.meta header with a bad second magic")
	}
}

func TestDecompress(t *testing.T) {
	c, err := newCodecs()
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	plain := bytes.Repeat([]byte("nydus chunk data "), 1000)
	lz := make([]byte, lz4.CompressBlockBound(len(plain)))
	n, err := lz4.CompressBlock(plain, lz, nil)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := zstd.NewWriter(nil)
	var gz bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(plain)
	gw.Close()
	for _, tc := range []struct {
		algo Compression
		src  []byte
	}{
		{CompressNone, plain},
		{CompressLZ4, lz[:n]},
		{CompressZstd, enc.EncodeAll(plain, nil)},
		{CompressGzip, gz.Bytes()},
	} {
		t.Run(tc.algo.String(), func(t *testing.T) {
			got, err := c.decompress(tc.algo, tc.src, uint64(len(plain)))
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("round trip: %v", err)
			}
			if _, err := c.decompress(tc.algo, tc.src, uint64(len(plain)+1)); err == nil {
				t.Error("accepted a wrong decompressed size")
			}
			if _, err := c.decompress(tc.algo, tc.src[:len(tc.src)/2], uint64(len(plain))); err == nil {
				t.Error("accepted truncated input")
			}
			if _, err := c.decompress(tc.algo, tc.src, 1<<30); err == nil {
				t.Error("accepted an absurd size")
			}
		})
	}
	if _, err := c.decompress(Compression(9), plain, 10); err == nil {
		t.Error("unknown algorithm")
	}
}

// TestV5LegacyNoExtendedTable reads the v5 fixture with its extended blob
// table removed, as 2020-era images were written.
func TestV5LegacyNoExtendedTable(t *testing.T) {
	data := readFixture(t, v5Boot)
	put64(data, 72, 0)
	put32(data, 68, 0)
	img, err := OpenBytes(data, "legacy", Options{Backend: openFixture(t, v5Boot, v5Blobs, Options{}).opts.Backend, DigestValidate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	n := lookupPath(t, img, "/normal-file-test/test.sh")
	if got := md5hex(readAll(t, img, n)); got != "a292e7c6b19c3566a7bbee6a7da632ab" {
		t.Errorf("md5 %s", got)
	}
	if img.Blobs()[0].ChunkCount != 0 {
		t.Errorf("chunk count %d without an extended table", img.Blobs()[0].ChunkCount)
	}
}
