package rafs

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
)

const fixtures = "testdata/fixtures"

func fx(p string) string { return filepath.Join(fixtures, p) }

// openFixture opens a fixture bootstrap with blobs from blobDir ("" for none).
func openFixture(t testing.TB, boot, blobDir string, opts Options) *Image {
	t.Helper()
	if blobDir != "" {
		opts.Backend = backend.NewLocalFS(blobDir)
	}
	img, err := Open(boot, opts)
	if err != nil {
		t.Fatalf("open %s: %v", boot, err)
	}
	t.Cleanup(func() { img.Close() })
	return img
}

// readAll reads a whole file of the image.
func readAll(t testing.TB, img *Image, n *Inode) []byte {
	t.Helper()
	buf := make([]byte, n.Size+10)
	got, err := img.ReadAt(context.Background(), n.Ino, buf, 0)
	if err != io.EOF || uint64(got) != n.Size {
		t.Fatalf("read ino %d: %d bytes of %d, %v", n.Ino, got, n.Size, err)
	}
	return buf[:got]
}

func md5hex(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

type treeNode struct {
	Type     string     `json:"type"`
	Name     string     `json:"name"`
	Target   string     `json:"target"`
	Contents []treeNode `json:"contents"`
}

// parseResult reads a v5 .result file: tree -J output, then md5sum lines.
func parseResult(t *testing.T, p string) (types, targets, md5s map[string]string) {
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(raw), "\n]\n")
	var top []treeNode
	if err := json.Unmarshal(raw[:i+3], &top); err != nil {
		t.Fatal(err)
	}
	types, targets, md5s = map[string]string{}, map[string]string{}, map[string]string{}
	var rec func(dir string, ns []treeNode)
	rec = func(dir string, ns []treeNode) {
		for _, n := range ns {
			p := path.Join(dir, n.Name)
			types[p] = n.Type
			if n.Type == "link" {
				targets[p] = n.Target
			}
			rec(p, n.Contents)
		}
	}
	rec("/", top[0].Contents)
	sc := bufio.NewScanner(strings.NewReader(string(raw[i+3:])))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 {
			md5s[f[1]] = f[0]
		}
	}
	return types, targets, md5s
}

func TestFixtureV5(t *testing.T) {
	for _, name := range []string{"sha256-nocompress-repeatable", "blake3-lz4_block-non_repeatable"} {
		t.Run(name, func(t *testing.T) {
			dir := fx("nydus/v5-repeatable")
			img := openFixture(t, filepath.Join(dir, name), filepath.Join(dir, "blobs"), Options{DigestValidate: true})
			if img.Version() != 5 {
				t.Fatalf("version %d", img.Version())
			}
			types, targets, md5s := parseResult(t, filepath.Join(dir, name+".result"))
			seen := map[string]bool{}
			inodes := 0
			err := img.Walk(func(p string, n *Inode) error {
				inodes++
				if p == "/" {
					return nil
				}
				seen[p] = true
				want, ok := types[p]
				if !ok {
					t.Errorf("%s: not in the .result tree", p)
					return nil
				}
				switch {
				case n.IsSymlink():
					tg, err := img.Readlink(n.Ino)
					if err != nil || want != "link" || string(tg) != targets[p] {
						t.Errorf("%s: symlink %q (%v), want %s %q", p, tg, err, want, targets[p])
					}
				case n.IsDir():
					if want != "directory" {
						t.Errorf("%s: directory, want %s", p, want)
					}
				case n.IsRegular():
					if want != "file" {
						t.Errorf("%s: file, want %s", p, want)
					}
					if got := md5hex(readAll(t, img, n)); got != md5s[p] {
						t.Errorf("%s: md5 %s, want %s", p, got, md5s[p])
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for p := range types {
				if !seen[p] {
					t.Errorf("%s: missing from the image", p)
				}
			}
			if inodes != 54 {
				t.Errorf("walked %d paths, want 54", inodes)
			}
			// The three names of the hard-linked test.sh are one inode.
			var inos []uint64
			for _, p := range []string{"/hardlink-test/foo", "/hardlink-test/test.sh", "/normal-file-test/test.sh"} {
				n := lookupPath(t, img, p)
				if n.Nlink != 3 || n.Size != 944 {
					t.Errorf("%s: nlink %d size %d", p, n.Nlink, n.Size)
				}
				inos = append(inos, n.Ino)
			}
			if inos[0] != inos[1] || inos[1] != inos[2] {
				t.Errorf("hard links have inode numbers %v", inos)
			}
			r, err := img.Check(context.Background(), CheckOptions{})
			if err != nil || r.ChunksVerified != 23 || r.Files != 23 || r.Dirs != 24 || r.Symlinks != 7 {
				t.Errorf("check: %+v, %v", r, err)
			}
		})
	}
}

func lookupPath(t testing.TB, img *Image, p string) *Inode {
	t.Helper()
	n, err := img.Inode(RootIno)
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if part == "" {
			continue
		}
		if n, err = img.Lookup(n.Ino, part); err != nil {
			t.Fatalf("lookup %s (%s): %v", p, part, err)
		}
	}
	return n
}

func TestFixtureV6(t *testing.T) {
	dir := fx("nydus/v6-2.2")
	for _, validate := range []bool{false, true} {
		img := openFixture(t, filepath.Join(dir, "rafs-v6-2.2.boot"), dir, Options{DigestValidate: validate})
		if img.Version() != 6 {
			t.Fatalf("version %d", img.Version())
		}
		root, _ := img.Inode(RootIno)
		if root.Mode != 040755 || root.Size != 67 || root.Nlink != 2 {
			t.Errorf("root: mode %o size %d nlink %d", root.Mode, root.Size, root.Nlink)
		}
		var names []string
		img.ReadDir(RootIno, 0, func(e DirEntry) bool { names = append(names, e.Name); return true })
		if strings.Join(names, ",") != ".,..,lib.rs,sync_io.rs" {
			t.Errorf("root entries %v", names)
		}
		for _, f := range []struct {
			name       string
			size       uint64
			mtime      uint64
			nsec       uint32
			md5, nidNo uint64
			sum        string
		}{
			{name: "lib.rs", size: 16931, mtime: 1676819553, nsec: 628661334, nidNo: 133, sum: "4709cf8873e419ecedc7d43fdee4a75f"},
			{name: "sync_io.rs", size: 13400, mtime: 1676819553, nsec: 628993084, nidNo: 136, sum: "5442bc7dc9dc5f985c7594e23866ae6f"},
		} {
			n := lookupPath(t, img, f.name)
			if n.Mode != 0100644 || n.Size != f.size || n.Nlink != 1 || n.Mtime != f.mtime || n.MtimeNsec != f.nsec || n.Ino != f.nidNo {
				t.Errorf("%s: %+v", f.name, n)
			}
			if got := md5hex(readAll(t, img, n)); got != f.sum {
				t.Errorf("%s: md5 %s want %s", f.name, got, f.sum)
			}
			// A read in the middle of the file.
			buf := make([]byte, 100)
			if k, err := img.ReadAt(context.Background(), n.Ino, buf, 5000); k != 100 || err != nil {
				t.Errorf("%s: partial read %d %v", f.name, k, err)
			}
		}
		r, err := img.Check(context.Background(), CheckOptions{})
		if err != nil || r.ChunksVerified != 2 || r.Files != 2 {
			t.Errorf("check: %+v, %v", r, err)
		}
	}
}

// snapshotterBoot extracts image/image.boot from a snapshotter tarball.
func snapshotterBoot(t testing.TB, name string) ([]byte, error) {
	f, err := os.Open(fx("nydus-snapshotter/" + name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, errors.New("no image/image.boot in " + name)
		}
		if h.Name == "image/image.boot" {
			return io.ReadAll(tr)
		}
	}
}

func TestFixtureSnapshotter(t *testing.T) {
	type sample struct {
		path   string
		mode   uint32
		size   uint64
		target string
	}
	samples := []sample{
		{path: "/bin", target: "usr/bin"},
		{path: "/etc/os-release", target: "../usr/lib/os-release"},
		{path: "/usr/lib/os-release", size: 382},
		{path: "/etc/debian_version", size: 13},
		{path: "/etc/passwd", size: 922},
		{path: "/etc/hostname", size: 22},
		{path: "/usr/bin/bash", size: 1396520, mode: 0100755},
		{path: "/var/tmp", mode: 041777},
		{path: "/var/spool/mail", target: "../mail"},
		{path: "/usr/bin/perl", size: 3806264},
	}
	for _, tc := range []struct {
		name    string
		version int
		size    int
	}{
		{"v6-bootstrap-chunk-pos-438272.tar.gz", 6, 643072},
		{"v5-bootstrap-file-size-736032.tar.gz", 5, 736032},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := snapshotterBoot(t, tc.name)
			if err != nil || len(data) != tc.size {
				t.Fatalf("image.boot: %d bytes, %v", len(data), err)
			}
			uid, gid := uint32(4242), uint32(4343)
			img, err := OpenBytes(data, "image.boot", Options{UID: &uid, GID: &gid})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			if img.Version() != tc.version {
				t.Fatalf("version %d", img.Version())
			}
			var dirs, files, links int
			var total uint64
			err = img.Walk(func(p string, n *Inode) error {
				switch {
				case n.IsDir():
					dirs++
				case n.IsRegular():
					files++
					total += n.Size
				case n.IsSymlink():
					links++
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if dirs != 678 || files != 2627 || links != 212 || total != 81619065 {
				t.Errorf("%d dirs, %d files (%d bytes), %d symlinks", dirs, files, total, links)
			}
			for _, s := range samples {
				n := lookupPath(t, img, s.path)
				if s.target != "" {
					tg, err := img.Readlink(n.Ino)
					if err != nil || string(tg) != s.target {
						t.Errorf("%s → %q, %v", s.path, tg, err)
					}
				}
				if s.size != 0 && n.Size != s.size {
					t.Errorf("%s: size %d want %d", s.path, n.Size, s.size)
				}
				if s.mode != 0 && n.Mode != s.mode {
					t.Errorf("%s: mode %o want %o", s.path, n.Mode, s.mode)
				}
			}
			// The prefetch tables: v5 lists the root, v6 (an old-builder
			// quirk) the /bin symlink.
			wantPrefetch := uint64(RootIno)
			if tc.version == 6 {
				wantPrefetch = lookupPath(t, img, "/bin").Ino
			}
			if pf := img.Prefetch(); len(pf) != 1 || pf[0] != wantPrefetch {
				t.Errorf("prefetch %v, want [%d]", pf, wantPrefetch)
			}
			// Hard links: one inode number, nlink 2.
			for _, pair := range [][2]string{{"/usr/bin/perl", "/usr/bin/perl5.34.0"}, {"/usr/bin/gunzip", "/usr/bin/uncompress"}} {
				a, b := lookupPath(t, img, pair[0]), lookupPath(t, img, pair[1])
				if a.Ino != b.Ino || a.Nlink != 2 || b.Nlink != 2 {
					t.Errorf("%v: inos %d/%d nlink %d/%d", pair, a.Ino, b.Ino, a.Nlink, b.Nlink)
				}
			}
			// EXPLICIT_UID_GID: clear in v6 (our ids), set in v5 (0).
			n := lookupPath(t, img, "/etc/passwd")
			wantUID := uint32(0)
			if tc.version == 6 {
				wantUID = uid
			}
			if n.UID != wantUID {
				t.Errorf("uid %d want %d", n.UID, wantUID)
			}
			if r, err := img.Check(context.Background(), CheckOptions{}); err != nil || r.Files != 2627 {
				t.Errorf("check: %+v, %v", r, err)
			}
			// No blobs: reads fail with an error, never a panic.
			if _, err := img.ReadAt(context.Background(), n.Ino, make([]byte, 10), 0); err == nil {
				t.Error("read without blobs succeeded")
			}
		})
	}
}

func TestFixtureSnapshotterInvalid(t *testing.T) {
	if _, err := snapshotterBoot(t, "invalid.tar.gz"); err == nil {
		t.Error("invalid.tar.gz has an image.boot")
	}
	data, err := snapshotterBoot(t, "invalid-bootstrap-file-size-133513.tar.gz")
	if err != nil || len(data) != 133513 {
		t.Fatalf("%d bytes, %v", len(data), err)
	}
	if img, err := OpenBytes(data, "image.boot", Options{}); err == nil {
		img.Close()
		t.Fatal("a Makefile opened as a RAFS image")
	} else {
		t.Logf("rejected: %v", err)
	}
}

func TestFixtureErofsUtils(t *testing.T) {
	boot := fx("erofs-utils/meta.img")
	if _, err := Open(boot, Options{}); err == nil || !strings.Contains(err.Error(), "plain EROFS") {
		t.Fatalf("plain EROFS opened as RAFS: %v", err)
	}
	img, err := Open(boot, Options{AllowPlainEROFS: true, Backend: &backend.LocalFS{BlobFile: fx("erofs-utils/blob.img")}})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	big := make([]byte, 300000)
	for i := range big {
		big[i] = byte(i * 7 % 251)
	}
	want := map[string]struct {
		mode uint32
		data string
	}{
		"/":             {mode: 040755},
		"/a.txt":        {mode: 0100644, data: "hello nydus\n"},
		"/dir1":         {mode: 040755},
		"/dir1/big.bin": {mode: 0100644, data: string(big)},
		"/empty":        {mode: 0100644},
		"/empty-dir":    {mode: 040755},
		"/link":         {mode: 0120777, data: "a.txt"},
	}
	got := 0
	err = img.Walk(func(p string, n *Inode) error {
		got++
		w, ok := want[p]
		if !ok {
			t.Errorf("unexpected %s", p)
			return nil
		}
		if n.Mode&syscall.S_IFMT != w.mode&syscall.S_IFMT {
			t.Errorf("%s: mode %o want %o", p, n.Mode, w.mode)
		}
		switch {
		case n.IsRegular():
			if d := readAll(t, img, n); string(d) != w.data {
				t.Errorf("%s: content differs (%d bytes)", p, len(d))
			}
		case n.IsSymlink():
			if tg, _ := img.Readlink(n.Ino); string(tg) != w.data {
				t.Errorf("%s → %q", p, tg)
			}
		}
		return nil
	})
	if err != nil || got != len(want) {
		t.Fatalf("walk: %d paths, %v", got, err)
	}
	xa := func(p string) map[string]string {
		xs, err := img.Xattrs(lookupPath(t, img, p).Ino)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, x := range xs {
			m[x.Name] = string(x.Value)
		}
		return m
	}
	if m := xa("/a.txt"); m["user.foo"] != "bar" || len(m) != 1 {
		t.Errorf("a.txt xattrs %v", m)
	}
	if m := xa("/empty-dir"); m["trusted.overlay.opaque"] != "y" {
		t.Errorf("empty-dir xattrs %v", m)
	}
}

var errEOF = io.EOF

type fuseSegment = fusewire.Segment

func hasSegments(r fuse.ReadResult) bool {
	_, ok := r.(fusewire.SegmentedResult)
	return ok
}
