package builder

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecodeParent feeds arbitrary bytes to the parent-bootstrap decoder:
// it must fail cleanly, never panic or run away.
func FuzzDecodeParent(f *testing.F) {
	src := f.TempDir()
	os.WriteFile(filepath.Join(src, "a"), []byte("hello"), 0o644)
	os.MkdirAll(filepath.Join(src, "d/e"), 0o755)
	os.Symlink("a", filepath.Join(src, "d/l"))
	os.Link(filepath.Join(src, "a"), filepath.Join(src, "d/h"))
	out := f.TempDir()
	if boot, _, err := BuildDir(src, out, Options{}); err == nil {
		b, _ := os.ReadFile(boot)
		f.Add(b)
		f.Add(b[:4096])
	}
	if b, err := os.ReadFile(filepath.Join(fixtureDir, "nydus/v6-2.2/rafs-v6-2.2.boot")); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pi, err := decodeParent(data)
		if err == nil && (pi.root == nil || !pi.root.isDir()) {
			t.Fatal("decoded a parent without a root directory")
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
