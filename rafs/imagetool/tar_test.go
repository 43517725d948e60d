package imagetool

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

const fixtures = "../testdata/fixtures"

func TestWriteTarV5(t *testing.T) {
	dir := filepath.Join(fixtures, "nydus/v5-repeatable")
	img, err := rafs.Open(filepath.Join(dir, "sha256-nocompress-repeatable"), rafs.Options{Backend: backend.NewLocalFS(filepath.Join(dir, "blobs"))})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	md5s := resultMD5s(t, filepath.Join(dir, "sha256-nocompress-repeatable.result"))
	var out bytes.Buffer
	if err := WriteTar(context.Background(), img, &out); err != nil {
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

// resultMD5s reads the md5sum lines ("HASH  /path") at the end of a v5
// fixture's .result file (after its tree -J listing).
func resultMD5s(t *testing.T, p string) map[string]string {
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(raw), "\n]\n")
	if i < 0 {
		t.Fatalf("%s: no tree listing", p)
	}
	md5s := map[string]string{}
	for _, l := range strings.Split(string(raw[i+3:]), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			md5s[f[1]] = f[0]
		}
	}
	if len(md5s) == 0 {
		t.Fatalf("%s: no md5 lines", p)
	}
	return md5s
}

func md5hex(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }
