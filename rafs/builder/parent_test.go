package builder

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// snapshotterBootstrap extracts image/image.boot of a nydus-snapshotter
// fixture (real nydus-image builds of one Debian tree, 3517 inodes, lz4,
// blake3; PROVENANCE.md §6): version 6 or 5.
func snapshotterBootstrap(t *testing.T, version int) string {
	t.Helper()
	name := "v6-bootstrap-chunk-pos-438272.tar.gz"
	if version == 5 {
		name = "v5-bootstrap-file-size-736032.tar.gz"
	}
	f, err := os.Open(filepath.Join(fixtureDir, "nydus-snapshotter", name))
	if err != nil {
		t.Fatalf("fixture missing: %v", err)
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

// TestParentFromNydus reads bootstraps nydus-image wrote, v6 and v5, as
// parents and builds a layer of the same version on each.
func TestParentFromNydus(t *testing.T) {
	for _, tc := range []struct {
		version int
		blob    string
	}{
		{6, "cdde6f5645daea414d60bc75611102a8bc8dae6198f087366365d6ff85bf5726"},
		{5, "02fef4a13a311de4adc5b34ca152d3a87c9371c76a5f720451c8b9602859b780"},
	} {
		t.Run(map[int]string{5: "v5", 6: "v6"}[tc.version], func(t *testing.T) {
			parent := snapshotterBootstrap(t, tc.version)
			opts := Options{FsVersion: tc.version, Compressor: CompressLZ4}
			must(t, opts.normalize())
			pi, err := loadParent(context.Background(), parent, &opts)
			if err != nil {
				t.Fatal(err)
			}
			counts := map[uint32]int{}
			seen := map[*inode]bool{}
			var files uint64
			must(t, walkBFS(pi.root, func(p string, d *dentry) error {
				counts[d.Ino.Mode&modeTypeMask]++
				if !seen[d.Ino] && d.Ino.isReg() {
					files += d.Ino.Size
				}
				seen[d.Ino] = true
				return nil
			}))
			// PROVENANCE.md §6: 678 directories, 2627 regular files
			// (81,619,065 bytes, of which /usr/bin/perl's 3806264 and
			// /usr/bin/gunzip's 2346 twice: two pairs of hard links), 212 symlinks.
			if counts[modeDir] != 678 || counts[modeReg] != 2627 || counts[modeLnk] != 212 || files != 81619065-3806264-2346 {
				t.Errorf("read %d dirs, %d files (%d bytes), %d symlinks", counts[modeDir], counts[modeReg], files, counts[modeLnk])
			}
			if n := lookup(pi.root, "/usr/bin/bash"); n == nil || n.Size != 1396520 || len(n.Chunks) != 2 || n.Mode != 0o100755 {
				t.Errorf("/usr/bin/bash read as %+v", n)
			}
			if lookup(pi.root, "/usr/bin/perl") != lookup(pi.root, "/usr/bin/perl5.34.0") {
				t.Error("the /usr/bin/perl hard links are two inodes")
			}
			if n := lookup(pi.root, "/bin"); n == nil || n.Target != "usr/bin" {
				t.Errorf("/bin read as %+v", n)
			}
			// The owners the image records are kept (the v6 image lacks
			// EXPLICIT_UID_GID, and nydus-image keeps them too).
			if n := lookup(pi.root, "/etc/gshadow"); n == nil || n.GID != 42 {
				t.Errorf("/etc/gshadow read as %+v", n)
			}
			if len(pi.chunks) != 2515 {
				t.Errorf("%d distinct chunks to deduplicate against, want 2515", len(pi.chunks))
			}

			// A layer on top: delete /etc/hostname, add a file, keep the rest.
			src := t.TempDir()
			must(t, os.MkdirAll(filepath.Join(src, "etc"), 0o755))
			must(t, os.WriteFile(filepath.Join(src, "etc/.wh.hostname"), nil, 0o644))
			must(t, os.WriteFile(filepath.Join(src, "etc/added"), []byte("added\n"), 0o644))
			out := t.TempDir()
			res, err := Build(context.Background(), src, filepath.Join(out, "top.boot"), out,
				Options{ParentBootstrap: parent, FsVersion: tc.version, Compressor: CompressLZ4})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.BlobIDs) != 2 || res.BlobIDs[0] != tc.blob {
				t.Fatalf("blob table %v", res.BlobIDs)
			}
			img, err := rafs.Open(res.BootstrapPath, rafs.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			before, err := rafs.Open(parent, rafs.Options{})
			must(t, err)
			defer before.Close()
			// The layer's own blob moves the parent's in the flat view.
			a, b := img.Blobs()[0], before.Blobs()[0]
			if a.MappedBlockAddr, b.MappedBlockAddr = 0, 0; a != b {
				t.Errorf("the parent's blob entry changed:\n%+v\n%+v", a, b)
			}
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
		})
	}
}

// TestParentMismatch: a layer must agree with its parent on the RAFS
// version, chunk size and digester (and, for v5, the compressor), as
// nydus-image requires; each mismatch is a clear error and writes nothing.
func TestParentMismatch(t *testing.T) {
	src := t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "f"), []byte("data"), 0o644))
	dir := t.TempDir()
	v6, _, err := BuildDir(src, filepath.Join(dir, "v6"), Options{})
	must(t, err)
	v5, _, err := BuildDir(src, filepath.Join(dir, "v5"), Options{FsVersion: 5, Compressor: CompressZstd})
	must(t, err)
	for _, tc := range []struct {
		name   string
		parent string
		opts   Options
		want   string
	}{
		{"v5-on-v6", v6, Options{FsVersion: 5}, "build the layer with --fs-version 6"},
		{"v6-on-v5", v5, Options{Compressor: CompressZstd}, "build the layer with --fs-version 5"},
		{"chunk-size", v6, Options{ChunkSize: 0x10000}, "chunk size 0x10000 differs from the parent's 0x100000"},
		{"digester", v6, Options{Digester: DigestSHA256}, "digester sha256 differs from the parent's blake3"},
		{"v5-compressor", v5, Options{FsVersion: 5, Compressor: CompressLZ4}, "compressor lz4_block differs from the parent's zstd"},
		{"not-a-bootstrap", filepath.Join(src, "f"), Options{}, "malformed RAFS image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			tc.opts.ParentBootstrap = tc.parent
			_, err := Build(context.Background(), src, filepath.Join(out, "top.boot"), out, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if left, _ := os.ReadDir(out); len(left) != 0 {
				t.Errorf("left %v behind", left)
			}
		})
	}
	// Mixing compressors is fine in v6, where each blob names its own.
	out := t.TempDir()
	_, err = Build(context.Background(), src, filepath.Join(out, "top.boot"), out, Options{ParentBootstrap: v6, Compressor: CompressZstd})
	must(t, err)
}

// TestParentBlobEntriesVerbatim: the parent's v6 blob-table entries are
// rebuilt from what the reader reports; they must come out byte for byte
// as the parent has them (nydus 2.2's and the snapshotter's images, and
// ours), but for the blob index.
func TestParentBlobEntriesVerbatim(t *testing.T) {
	src := t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "f"), []byte("data"), 0o644))
	ours, _, err := BuildDir(src, t.TempDir(), Options{Compressor: CompressZstd})
	must(t, err)
	for _, p := range []string{snapshotterBootstrap(t, 6), filepath.Join(fixtureDir, "nydus/v6-2.2/rafs-v6-2.2.boot"), ours} {
		boot, err := os.ReadFile(p)
		must(t, err)
		img, err := rafs.OpenBytes(boot, p, rafs.Options{})
		must(t, err)
		s := img.Super()
		opts := Options{ChunkSize: s.ChunkSize}
		must(t, opts.normalize())
		pi, err := parentFrom(context.Background(), img, &opts)
		img.Close()
		must(t, err)
		ext := boot[erofsSBOffset+128:]
		table := boot[binary.LittleEndian.Uint64(ext[8:]):][:v6BlobEntrySize*len(pi.blobs)]
		for i, b := range pi.blobs {
			e := make([]byte, v6BlobEntrySize)
			encodeV6BlobEntry(e, i, s.ChunkSize, b)
			if want := table[i*v6BlobEntrySize:][:v6BlobEntrySize]; !bytes.Equal(e, want) {
				t.Errorf("%s blob %d:\n got %x\nwant %x", p, i, e, want)
			}
		}
	}
}
