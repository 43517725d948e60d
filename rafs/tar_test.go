package rafs

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"path/filepath"
	"testing"
)

func TestWriteTarV5(t *testing.T) {
	dir := fx("nydus/v5-repeatable")
	img := openFixture(t, filepath.Join(dir, "sha256-nocompress-repeatable"), filepath.Join(dir, "blobs"), Options{})
	_, _, md5s := parseResult(t, filepath.Join(dir, "sha256-nocompress-repeatable.result"))
	var out bytes.Buffer
	if err := img.WriteTar(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&out)
	regs, links, entries := 0, 0, 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries++
		switch h.Typeflag {
		case tar.TypeReg:
			data, _ := io.ReadAll(tr)
			if md5hex(data) != md5s["/"+h.Name] {
				t.Errorf("%s: md5 differs", h.Name)
			}
			regs++
		case tar.TypeLink:
			if h.Linkname != "hardlink-test/foo" {
				t.Errorf("%s: link to %q", h.Name, h.Linkname)
			}
			links++
		}
	}
	if entries != 53 || regs+links != len(md5s) || links != 2 {
		t.Errorf("%d entries, %d files, %d hard links", entries, regs, links)
	}
}
