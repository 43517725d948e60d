package builder

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// snapshotterBootstrap extracts image/image.boot of the nydus-snapshotter
// v6 fixture (a real nydus-image build: compact inodes, lz4, 3517 inodes).
func snapshotterBootstrap(t *testing.T) string {
	t.Helper()
	f, err := os.Open(filepath.Join(fixtureDir, "nydus-snapshotter/v6-bootstrap-chunk-pos-438272.tar.gz"))
	if err != nil {
		t.Skipf("skipping: fixture not available: %v", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	must(t, err)
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no image/image.boot in the fixture: %v", err)
		}
		if h.Name == "image/image.boot" {
			p := filepath.Join(t.TempDir(), "parent.boot")
			out, _ := os.Create(p)
			_, err := io.Copy(out, tr)
			out.Close()
			must(t, err)
			return p
		}
	}
}

// TestParentFromNydus decodes a bootstrap nydus-image wrote and builds a
// layer on top of it.
func TestParentFromNydus(t *testing.T) {
	parent := snapshotterBootstrap(t)
	pi, err := loadParent(parent)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[uint32]int{}
	seen := map[*inode]bool{}
	var files uint64
	must(t, walkBFS(pi.root, func(p string, d *dentry) error {
		if !seen[d.Ino] {
			seen[d.Ino] = true
			counts[d.Ino.Mode&modeTypeMask]++
			if d.Ino.isReg() {
				files += d.Ino.Size
			}
		}
		return nil
	}))
	// PROVENANCE.md §6: 678 directories, 2627 regular files (81,619,065
	// bytes), 212 symlinks; hard links are separate inodes in this image.
	if counts[modeDir] != 678 || counts[modeReg] != 2627 || counts[modeLnk] != 212 || files != 81619065 {
		t.Errorf("decoded %d dirs, %d files (%d bytes), %d symlinks", counts[modeDir], counts[modeReg], files, counts[modeLnk])
	}
	if n := lookup(pi.root, "/usr/bin/bash"); n == nil || n.Size != 1396520 || len(n.Chunks) != 2 || n.Mode != 0o100755 {
		t.Errorf("/usr/bin/bash decoded as %+v", n)
	}
	if n := lookup(pi.root, "/bin"); n == nil || n.Target != "usr/bin" {
		t.Errorf("/bin decoded as %+v", n)
	}

	// A layer on top: delete /etc/hostname, add a file, keep the rest.
	src := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(src, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "etc/.wh.hostname"), nil, 0o644))
	must(t, os.WriteFile(filepath.Join(src, "etc/added"), []byte("added\n"), 0o644))
	out := t.TempDir()
	res, err := Build(context.Background(), src, filepath.Join(out, "top.boot"), out, Options{ParentBootstrap: parent})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.BlobIDs) != 2 || res.BlobIDs[0] != "cdde6f5645daea414d60bc75611102a8bc8dae6198f087366365d6ff85bf5726" {
		t.Fatalf("blob table %v", res.BlobIDs)
	}
	img, err := rafs.Open(res.BootstrapPath, rafs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	sizes := map[string]uint64{}
	must(t, img.Walk(func(p string, n *rafs.Inode) error { sizes[p] = n.Size; return nil }))
	if _, ok := sizes["/etc/hostname"]; ok {
		t.Error("/etc/hostname survived its whiteout")
	}
	if sizes["/etc/added"] != 6 || sizes["/etc/passwd"] != 922 || sizes["/usr/bin/bash"] != 1396520 {
		t.Errorf("merged sizes: added %d, passwd %d, bash %d", sizes["/etc/added"], sizes["/etc/passwd"], sizes["/usr/bin/bash"])
	}
	if len(sizes) != 3517 {
		t.Errorf("merged image has %d paths, want 3517 (3517 - hostname + added)", len(sizes))
	}
}
