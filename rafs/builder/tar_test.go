package builder

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tarFromDir writes dir as an OCI layer tar (PAX, with xattrs, hard links
// and nanosecond mtimes), gzip-compressed when gz.
func tarFromDir(t testing.TB, dir, out string, gz bool) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var w io.Writer = f
	if gz {
		zw := gzip.NewWriter(f)
		defer zw.Close()
		w = zw
	}
	tw := tar.NewWriter(w)
	defer tw.Close()
	links := map[uint64]string{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode()&fs.ModeSocket != 0 {
			return nil
		}
		target, _ := os.Readlink(p)
		hdr, err := tar.FileInfoHeader(info, target)
		if err != nil {
			return err
		}
		hdr.Name = "./" + rel
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Format = tar.FormatPAX
		hdr.Uname, hdr.Gname = "", ""
		st := info.Sys().(*unixStat)
		hdr.Mode = int64(st.Mode & 0o7777)
		if info.Mode().IsRegular() && st.Nlink > 1 {
			if first, ok := links[st.Ino]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				links[st.Ino] = hdr.Name
			}
		}
		xs, err := readXattrs(p)
		if err != nil {
			return err
		}
		for _, x := range xs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+x.Name] = string(x.Value)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(data)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestTarSources builds the same tree from a directory, a tar and a tar.gz.
func TestTarSources(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	makeSource(t, src)
	want := scanTree(t, src)
	tmp := t.TempDir()
	for _, tc := range []struct {
		typ  SourceType
		gz   bool
		opts Options
	}{
		{TarRafs, false, Options{}},
		{TargzRafs, true, Options{Compressor: CompressZstd}},
		{TarRafs, false, Options{Compressor: CompressLZ4, Digester: DigestSHA256}},
	} {
		t.Run(string(tc.typ)+"-"+tc.opts.Compressor, func(t *testing.T) {
			layer := filepath.Join(tmp, "layer.tar")
			tarFromDir(t, src, layer, tc.gz)
			out := t.TempDir()
			tc.opts.Type = tc.typ
			res, err := Build(context.Background(), layer, filepath.Join(out, "boot"), out, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			compareTrees(t, want, scanImage(t, res.BootstrapPath, out))
		})
	}
}

// TestBadInput wants a clear error naming the entry and no output at all.
func TestBadInput(t *testing.T) {
	tmp := t.TempDir()
	mkTar := func(name string, entries func(tw *tar.Writer)) string {
		p := filepath.Join(tmp, name)
		f, _ := os.Create(p)
		tw := tar.NewWriter(f)
		entries(tw)
		tw.Close()
		f.Close()
		return p
	}
	file := func(tw *tar.Writer, name, body string) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	escape := mkTar("escape.tar", func(tw *tar.Writer) {
		file(tw, "a/../b", "fine: stays inside")
		file(tw, "a/../../etc/passwd", "x")
	})
	sparse := mkTar("sparse.tar", func(tw *tar.Writer) {
		file(tw, "ok", "fine")
		tw.WriteHeader(&tar.Header{Name: "weird", Typeflag: 'Z', Mode: 0o644})
	})
	badXattr := mkTar("xattr.tar", func(tw *tar.Writer) {
		tw.WriteHeader(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatPAX,
			PAXRecords: map[string]string{"SCHILY.xattr.system.nfs4_acl": "x"}})
	})
	danglingLink := mkTar("link.tar", func(tw *tar.Writer) {
		tw.WriteHeader(&tar.Header{Name: "hl", Typeflag: tar.TypeLink, Linkname: "missing"})
	})
	truncated := filepath.Join(tmp, "truncated.tar")
	full := mkTar("full.tar", func(tw *tar.Writer) { file(tw, "big", strings.Repeat("y", 100000)) })
	data, _ := os.ReadFile(full)
	os.WriteFile(truncated, data[:5000], 0o644)
	notGz := mkTar("plain.tar", func(tw *tar.Writer) { file(tw, "f", "x") })

	for _, tc := range []struct {
		name, src string
		typ       SourceType
		want      string
	}{
		{"escaping path", escape, TarRafs, `"a/../../etc/passwd"`},
		{"unsupported entry", sparse, TarRafs, `tar entry "weird": unsupported entry type`},
		{"unsupported xattr", badXattr, TarRafs, `"f": xattr "system.nfs4_acl"`},
		{"dangling hard link", danglingLink, TarRafs, "/hl: hard link target /missing"},
		{"truncated tar", truncated, TarRafs, `tar entry "big"`},
		{"not gzip", notGz, TargzRafs, "malformed tar.gz"},
		{"missing source", filepath.Join(tmp, "nope"), DirRafs, "nope"},
		{"parent is not a bootstrap", notGz, TarRafs, "parent bootstrap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			opts := Options{Type: tc.typ}
			if tc.name == "parent is not a bootstrap" {
				opts.ParentBootstrap = notGz
			}
			_, err := Build(context.Background(), tc.src, filepath.Join(out, "boot"), out, opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %s", err, tc.want)
			}
			left, _ := os.ReadDir(out)
			if len(left) != 0 {
				t.Errorf("output left behind: %v", left)
			}
		})
	}
}
