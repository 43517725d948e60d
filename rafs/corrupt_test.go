package rafs

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/klauspost/compress/zstd"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
)

var (
	v5Boot   = fx("nydus/v5-repeatable/sha256-nocompress-repeatable")
	v5Blobs  = fx("nydus/v5-repeatable/blobs")
	v6Dir    = fx("nydus/v6-2.2")
	v6Boot   = fx("nydus/v6-2.2/rafs-v6-2.2.boot")
	v6BlobID = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
)

func readFixture(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// exercise opens data and, if that works, walks it and reads everything;
// it returns the first error. It must never panic.
func exercise(data []byte, be backend.Backend) error {
	img, err := OpenBytes(data, "image.boot", Options{Backend: be, DigestValidate: true})
	if err != nil {
		return err
	}
	defer img.Close()
	_, _ = img.Super(), img.Blobs()
	buf := make([]byte, 4096)
	count, reads, chunks := 0, 0, 0
	read := map[uint64]bool{}
	return img.Walk(func(p string, n *Inode) error {
		if count++; count > 5000 {
			return errors.New("too many inodes")
		}
		if read[n.Ino] {
			return nil
		}
		read[n.Ino] = true
		if _, err := img.Xattrs(n.Ino); err != nil {
			return err
		}
		switch {
		case n.IsSymlink():
			_, err := img.Readlink(n.Ino)
			return err
		case n.IsRegular():
			// A few small reads per file and in all: the point is to
			// resolve chunks, not to hash megabytes per input.
			for _, off := range []uint64{0, n.Size / 2, n.Size - min(n.Size, 100)} {
				if reads++; reads > 64 {
					return nil
				}
				if _, err := img.ReadAt(context.Background(), n.Ino, buf, int64(off)); err != nil && !errors.Is(err, errEOF) {
					return err
				}
			}
			// And the chunk list a builder would read (a bounded number).
			return img.Chunks(context.Background(), n.Ino, func(Chunk) error {
				if chunks++; chunks > 10000 {
					return errors.New("too many chunks")
				}
				return nil
			})
		}
		return nil
	})
}

func put32(b []byte, off int, v uint32) { le.PutUint32(b[off:], v) }
func put64(b []byte, off int, v uint64) { le.PutUint64(b[off:], v) }

// v5InodeOff is the byte offset of v5 inode idx in data.
func v5InodeOff(t *testing.T, data []byte, idx uint64) int {
	m, err := openV5(data)
	if err != nil {
		t.Fatal(err)
	}
	n, err := m.inode(idx)
	if err != nil {
		t.Fatal(err)
	}
	return int(n.v5.off)
}

func TestCorruptImages(t *testing.T) {
	v5 := readFixture(t, v5Boot)
	v6 := readFixture(t, v6Boot)
	v5be, v6be := backend.NewLocalFS(v5Blobs), backend.NewLocalFS(v6Dir)
	hl := v5InodeOff(t, v5, 2) // /hardlink-test, a directory
	tests := []struct {
		name string
		base []byte
		be   backend.Backend
		mut  func(b []byte) []byte
		want string
	}{
		{"empty", v5, v5be, func(b []byte) []byte { return nil }, "no RAFS v5/v6 magic"},
		{"v5 truncated to 100", v5, v5be, func(b []byte) []byte { return b[:100] }, "v5"},
		{"v5 truncated superblock", v5, v5be, func(b []byte) []byte { return b[:8192] }, "outside"},
		{"v5 truncated inodes", v5, v5be, func(b []byte) []byte { return b[:len(b)/2&^7] }, "outside"},
		{"v5 truncated unaligned", v5, v5be, func(b []byte) []byte { return b[:len(b)-3] }, "multiple of 8"},
		{"v6 truncated to 1100", v6, v6be, func(b []byte) []byte { return b[:1100] }, "no RAFS v5/v6 magic"},
		{"v6 truncated superblock", v6, v6be, func(b []byte) []byte { return b[:4096] }, "past the end"},
		{"v6 truncated inodes", v6, v6be, func(b []byte) []byte { return b[:12288] }, "outside"},
		{"v5 wrong magic", v5, v5be, func(b []byte) []byte { b[0] ^= 1; return b }, "no RAFS v5/v6 magic"},
		{"v6 wrong magic", v6, v6be, func(b []byte) []byte { b[1024] ^= 1; return b }, "no RAFS v5/v6 magic"},
		{"v5 inode table past EOF", v5, v5be, func(b []byte) []byte { put64(b, 32, 1<<40); return b }, "outside"},
		{"v5 inode offset past EOF", v5, v5be, func(b []byte) []byte { put32(b, 8192+4*3, 1<<28); return b }, "outside"},
		{"v5 absurd inode count", v5, v5be, func(b []byte) []byte { put32(b, 56, 0xffffffff); return b }, "outside"},
		{"v5 absurd child count", v5, v5be, func(b []byte) []byte { put32(b, hl+96, 0x7fffffff); return b }, "outside the"},
		{"v5 absurd file size", v5, v5be, func(b []byte) []byte {
			put64(b, v5InodeOff(t, b, 5)+64, 1<<62)
			return b
		}, "size"},
		{"v5 cyclic directory", v5, v5be, func(b []byte) []byte { put32(b, hl+92, 1); put32(b, hl+96, 1); return b }, "cycle"},
		{"v5 blob table past EOF", v5, v5be, func(b []byte) []byte { put64(b, 48, uint64(len(b))-8); put32(b, 64, 4096); return b }, "outside"},
		{"v6 blob table past EOF", v6, v6be, func(b []byte) []byte { put64(b, 1152+8, 1<<32); return b }, "outside"},
		{"v6 absurd chunk count", v6, v6be, func(b []byte) []byte { put32(b, 4096+72, 1<<30); return b }, "absurd"},
		{"v6 absurd device count", v6, v6be, func(b []byte) []byte { b[1024+86], b[1024+87] = 0xff, 0xff; return b }, "devices"},
		{"v6 absurd file size", v6, v6be, func(b []byte) []byte { put64(b, 2*4096+133*32+8, 1<<60); return b }, "chunk entries"},
		{"v6 dirent past EOF", v6, v6be, func(b []byte) []byte { return setV6Dirent(t, b, "lib.rs", 1<<40) }, "past the end"},
		{"v6 cyclic directory", v6, v6be, func(b []byte) []byte { return setV6Dirent(t, b, "lib.rs", 128) }, "cycle"},
		{"v6 bad super flags", v6, v6be, func(b []byte) []byte { put64(b, 1152, 0x1000_0000_0000); return b }, "flags"},
		{"v6 chunk index past ci array", v6, v6be, func(b []byte) []byte {
			// lib.rs's chunk index entry: ci index 0x1234.
			b[2*4096+133*32+64] = 0x34
			b[2*4096+133*32+65] = 0x12
			return b
		}, "out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.mut(bytes.Clone(tc.base))
			err := exercise(data, tc.be)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// setV6Dirent rewrites the nid of a root entry of the v6-2.2 bootstrap.
func setV6Dirent(t *testing.T, b []byte, name string, nid uint64) []byte {
	m, err := openV6(b, false)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := m.inode(m.rootNid)
	blk, _ := m.block(root, 0)
	found := false
	m.dirBlock(blk, func(i int, e v6Dirent) bool {
		if string(e.name) == name {
			off := int(root.v6.off+root.v6.isize+root.v6.xsize) + i*12
			put64(b, off, nid)
			found = true
		}
		return true
	})
	if !found {
		t.Fatalf("no %s in the root", name)
	}
	return b
}

// TestDigestMismatch corrupts one byte of an uncompressed v5 chunk: with
// validation the read fails (EIO through FUSE) and the bytes are never
// served; check names the file.
func TestDigestMismatch(t *testing.T) {
	dir := t.TempDir()
	blob := readFixture(t, filepath.Join(v5Blobs, "7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00"))
	img0 := openFixture(t, v5Boot, v5Blobs, Options{})
	n := lookupPath(t, img0, "/normal-file-test/test.sh")
	var chunkOff uint64
	img0.f.chunks(n, 0, n.Size, func(c chunkRef) error { chunkOff = c.ci.CompressedOffset; return nil })
	blob[chunkOff+10] ^= 0xff
	if err := os.WriteFile(filepath.Join(dir, "7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	img := openFixture(t, v5Boot, dir, Options{DigestValidate: true})
	buf := make([]byte, 4096)
	got, err := img.ReadAt(context.Background(), n.Ino, buf, 0)
	if !errors.Is(err, ErrDigest) {
		t.Fatalf("read of a corrupt chunk: %d bytes, %v", got, err)
	}
	fs := NewFS(img, FSOptions{})
	for _, zc := range []bool{false, true} {
		fs.opts.DisableZeroCopy = !zc
		res, st := fs.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: n.Ino}, Size: 4096}, buf)
		if st != fuse.EIO || res != nil {
			t.Fatalf("FUSE read of a corrupt chunk: %v", st)
		}
	}
	// Other files still read.
	ok := lookupPath(t, img, "/normal-file-test/busybox/repositories")
	if _, err := img.ReadAt(context.Background(), ok.Ino, make([]byte, ok.Size), 0); err != nil {
		t.Errorf("read of an intact file: %v", err)
	}
	if _, err := img.Check(context.Background(), CheckOptions{}); err == nil || !strings.Contains(err.Error(), "/normal-file-test/test.sh") && !strings.Contains(err.Error(), "/hardlink-test/foo") {
		t.Errorf("check: %v", err)
	}
	// Without validation the uncompressed chunk goes through zero copy.
	img2 := openFixture(t, v5Boot, dir, Options{})
	res, st := NewFS(img2, FSOptions{}).Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: n.Ino}, Size: 4096}, buf)
	if !st.Ok() {
		t.Fatal(st)
	}
	if _, isSeg := res.(interface{ Segments() []fuseSegment }); !isSeg && !hasSegments(res) {
		t.Errorf("uncompressed read without validation is not zero-copy: %T", res)
	}
}

// TestInlineBootstrap builds a blob carrying its bootstrap (as
// --blob-inline-meta does) from the v6 fixture and opens it as --bootstrap.
func TestInlineBootstrap(t *testing.T) {
	blob := readFixture(t, filepath.Join(v6Dir, v6BlobID))
	boot := readFixture(t, v6Boot)
	put32(boot, 4096+104, 0)                        // blob_toc_size unknown
	copy(boot[4096+136:4096+168], make([]byte, 32)) // no toc digest
	put32(boot, 4096+84, le.Uint32(boot[4096+84:])|blobInlinedFSMeta)
	enc, _ := zstd.NewWriter(nil)
	zboot := enc.EncodeAll(boot, nil)
	tocStart := len(blob) - 1024 // old ToC: 4 entries + tar header
	oldEntries := blob[tocStart : len(blob)-512]
	out := bytes.Clone(blob[:tocStart])
	bootOff := len(out)
	out = append(out, zboot...)
	out = append(out, tarHeader512(t, "image.boot", len(zboot))...)
	entry := make([]byte, 128)
	put32(entry, 0, tocCompressZstd)
	copy(entry[8:], "image.boot")
	sum := sha256.Sum256(boot)
	copy(entry[24:], sum[:])
	put64(entry, 56, uint64(bootOff))
	put64(entry, 64, uint64(len(zboot)))
	put64(entry, 72, uint64(len(boot)))
	entries := append(bytes.Clone(oldEntries), entry...)
	out = append(out, entries...)
	out = append(out, tarHeader512(t, "rafs.blob.toc", len(entries))...)
	dir := t.TempDir()
	p := filepath.Join(dir, v6BlobID)
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	img := openFixture(t, p, dir, Options{DigestValidate: true})
	if ids := img.BlobIDs(); len(ids) != 1 || ids[0] != v6BlobID {
		t.Errorf("blob ids %v", ids)
	}
	n := lookupPath(t, img, "/sync_io.rs")
	if got := md5hex(readAll(t, img, n)); got != "5442bc7dc9dc5f985c7594e23866ae6f" {
		t.Errorf("md5 %s", got)
	}
	// A corrupt inlined bootstrap is refused.
	out[bootOff+len(zboot)/2] ^= 0xff
	if _, err := OpenBytes(out, v6BlobID, Options{}); err == nil {
		t.Error("opened a blob with a corrupt inlined bootstrap")
	}
}

func tarHeader512(t *testing.T, name string, size int) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Size: int64(size), Mode: 0o444, Typeflag: tar.TypeReg, Format: tar.FormatGNU}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()[:512]
}

// TestCheckChunkTableMismatch: a v6 bootstrap whose chunk table disagrees
// with the blob's ci array fails check (reads still use the blob's ci).
func TestCheckChunkTableMismatch(t *testing.T) {
	boot := readFixture(t, v6Boot)
	put32(boot, 0x4000+40, 1)
	put32(boot, 0x4000+80+40, 1)
	img, err := OpenBytes(boot, "image.boot", Options{Backend: backend.NewLocalFS(v6Dir)})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if _, err := img.Check(context.Background(), CheckOptions{}); err == nil || !strings.Contains(err.Error(), "chunk table") {
		t.Fatalf("check: %v", err)
	}
	n := lookupPath(t, img, "/lib.rs")
	if got := md5hex(readAll(t, img, n)); got != "4709cf8873e419ecedc7d43fdee4a75f" {
		t.Errorf("md5 %s", got)
	}
}
