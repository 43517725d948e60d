package builder

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// FuzzParent feeds arbitrary bootstraps to the parent handling: whatever
// the rafs reader opens, parentFrom must either refuse with an error or
// turn into a tree that, written again as a bootstrap, the reader opens
// and walks.
func FuzzParent(f *testing.F) {
	src := f.TempDir()
	os.WriteFile(filepath.Join(src, "a"), []byte("hello"), 0o644)
	os.MkdirAll(filepath.Join(src, "d/e"), 0o755)
	os.Symlink("a", filepath.Join(src, "d/l"))
	os.Link(filepath.Join(src, "a"), filepath.Join(src, "d/h"))
	for i, opts := range []Options{{}, {FsVersion: 5}} {
		out := filepath.Join(f.TempDir(), fmt.Sprint(i))
		if boot, _, err := BuildDir(src, out, opts); err == nil {
			b, _ := os.ReadFile(boot)
			f.Add(b)
		}
	}
	for _, p := range []string{"nydus/v6-2.2/rafs-v6-2.2.boot", "nydus/v5-repeatable/sha256-nocompress-repeatable"} {
		if b, err := os.ReadFile(filepath.Join(fixtureDir, p)); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := rafs.OpenBytes(data, "parent.boot", rafs.Options{RecordedOwners: true, ChunkCacheSize: -1})
		if err != nil {
			return
		}
		defer img.Close()
		// Build options that agree with the parent, so that its tree is
		// converted rather than refused up front.
		s := img.Super()
		opts := Options{FsVersion: s.Version, ChunkSize: s.ChunkSize, Digester: DigestBlake3, Compressor: CompressNone}
		if s.Digest == rafs.DigestSHA256 {
			opts.Digester = DigestSHA256
		}
		if s.Compression == rafs.CompressLZ4 {
			opts.Compressor = CompressLZ4
		} else if s.Compression == rafs.CompressZstd {
			opts.Compressor = CompressZstd
		}
		if opts.normalize() != nil {
			return
		}
		pi, err := parentFrom(context.Background(), img, &opts)
		if err != nil {
			return
		}
		if pi.root == nil || !pi.root.isDir() {
			t.Fatal("converted a parent without a root directory")
		}
		out := newImage(pi.root, pi.blobs, &opts)
		var boot []byte
		if opts.FsVersion == 5 {
			boot, err = writeV5(out, opts.Digester)
		} else {
			boot, err = writeV6(out)
		}
		if err != nil {
			return
		}
		again, err := rafs.OpenBytes(boot, "again.boot", rafs.Options{})
		if err != nil {
			t.Fatalf("the re-encoded parent does not open: %v", err)
		}
		defer again.Close()
		if err := again.Walk(func(string, *rafs.Inode) error { return nil }); err != nil {
			t.Fatalf("the re-encoded parent does not walk: %v", err)
		}
	})
}

// FuzzTarLayer builds images from arbitrary layer tars: every input must
// either build or fail with an error, leaving nothing behind.
func FuzzTarLayer(f *testing.F) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "a/b", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3})
	tw.Write([]byte("abc"))
	tw.WriteHeader(&tar.Header{Name: "a/.wh.c", Typeflag: tar.TypeReg})
	tw.WriteHeader(&tar.Header{Name: "a/.wh..wh..opq", Typeflag: tar.TypeReg})
	tw.WriteHeader(&tar.Header{Name: "l", Typeflag: tar.TypeLink, Linkname: "a/b"})
	tw.WriteHeader(&tar.Header{Name: "s", Typeflag: tar.TypeSymlink, Linkname: "../x"})
	tw.WriteHeader(&tar.Header{Name: "dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 5})
	tw.Close()
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:700])
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		layer := filepath.Join(dir, "layer.tar")
		if err := os.WriteFile(layer, data, 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "out")
		_, err := Build(context.Background(), layer, filepath.Join(out, "boot"), out,
			Options{Type: TarRafs, ChunkSize: 0x1000, Workers: 1})
		if err != nil {
			if left, _ := os.ReadDir(out); len(left) != 0 {
				t.Fatalf("error %v left %v behind", err, left)
			}
		}
	})
}
