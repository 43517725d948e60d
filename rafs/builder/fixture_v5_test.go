package builder

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// TestV5MatchesNydus unpacks nydus's v5 "repeatable" fixture with our
// reader, rebuilds it as RAFS v5 (sha256, uncompressed) and compares every
// inode record with nydus's: index order, names, parents, child ranges,
// Merkle digests, modes, sizes and link counts.
func TestV5MatchesNydus(t *testing.T) {
	dir := filepath.Join(fixtureDir, "nydus/v5-repeatable")
	refPath := filepath.Join(dir, "sha256-nocompress-repeatable")
	ref, err := os.ReadFile(refPath)
	if err != nil {
		t.Fatalf("fixture missing: %v", err)
	}
	img, err := rafs.Open(refPath, rafs.Options{Backend: backend.NewLocalFS(filepath.Join(dir, "blobs"))})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	src := filepath.Join(t.TempDir(), "src")
	links := map[uint64]string{}
	type dirTime struct {
		p string
		n *rafs.Inode
	}
	var dirs []dirTime
	err = img.Walk(func(p string, n *rafs.Inode) error {
		full := filepath.Join(src, p)
		switch {
		case n.IsDir():
			if err := os.MkdirAll(full, os.FileMode(n.Mode&0o777)); err != nil {
				return err
			}
			dirs = append(dirs, dirTime{full, n})
			return os.Chmod(full, os.FileMode(n.Mode&0o777))
		case n.IsSymlink():
			tgt, err := img.Readlink(n.Ino)
			if err != nil {
				return err
			}
			if err := os.Symlink(string(tgt), full); err != nil {
				return err
			}
		case n.IsRegular():
			if first, ok := links[n.Ino]; ok {
				return os.Link(first, full)
			}
			links[n.Ino] = full
			data := make([]byte, n.Size)
			if _, err := img.ReadAt(context.Background(), n.Ino, data, 0); err != nil && n.Size > 0 {
				return err
			}
			if err := os.WriteFile(full, data, os.FileMode(n.Mode&0o777)); err != nil {
				return err
			}
			if err := os.Chmod(full, os.FileMode(n.Mode&0o777)); err != nil {
				return err
			}
		}
		ts := []unix.Timespec{{Sec: int64(n.Mtime), Nsec: int64(n.MtimeNsec)}, {Sec: int64(n.Mtime), Nsec: int64(n.MtimeNsec)}}
		return unix.UtimesNanoAt(unix.AT_FDCWD, full, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		n := dirs[i].n
		ts := []unix.Timespec{{Sec: int64(n.Mtime), Nsec: int64(n.MtimeNsec)}, {Sec: int64(n.Mtime), Nsec: int64(n.MtimeNsec)}}
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, dirs[i].p, ts, 0))
	}
	out := t.TempDir()
	res, err := Build(context.Background(), src, filepath.Join(out, "boot"), out, Options{FsVersion: 5, Digester: DigestSHA256})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(res.BootstrapPath)
	le := binary.LittleEndian
	// s_inodes_count is left out: nydus wrote 51 for 52 unique inodes (54
	// entries, one file with three names); we write the unique count.
	for _, f := range []struct {
		name string
		off  int
	}{{"inode table entries", 56}, {"blob table size", 64}, {"ext blob entries", 68}} {
		if a, b := le.Uint32(got[f.off:]), le.Uint32(ref[f.off:]); a != b {
			t.Errorf("superblock %s: ours %d, nydus %d", f.name, a, b)
		}
	}
	if res.BlobSHA256 != res.BlobID {
		t.Errorf("Result.BlobSHA256 %s; a v5 blob is named by its sha256 %s", res.BlobSHA256, res.BlobID)
	}
	if res.BlobID != "7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00" {
		t.Errorf("blob id %s, nydus 7334a259…: chunk order or content differs", res.BlobID)
	}
	n := int(le.Uint32(ref[56:]))
	for idx := 1; idx <= n; idx++ {
		ro := int(le.Uint32(ref[8192+4*(idx-1):])) << 3
		go_ := int(le.Uint32(got[8192+4*(idx-1):])) << 3
		r, g := ref[ro:ro+128], got[go_:go_+128]
		rn, gn := ref[ro+128:ro+128+int(le.Uint16(r[100:]))], got[go_+128:go_+128+int(le.Uint16(g[100:]))]
		if string(rn) != string(gn) {
			t.Errorf("index %d: name %q, nydus %q", idx, gn, rn)
			continue
		}
		for _, f := range []struct {
			name      string
			off, size int
		}{{"digest", 0, 32}, {"parent", 32, 8}, {"ino", 40, 8}, {"mode", 60, 4}, {"nlink", 88, 4},
			{"child index/count", 92, 8}, {"symlink size", 102, 2}, {"mtime", 108, 12}} {
			if string(r[f.off:f.off+f.size]) != string(g[f.off:f.off+f.size]) {
				t.Errorf("%s (index %d) %s: ours %x, nydus %x", rn, idx, f.name, g[f.off:f.off+f.size], r[f.off:f.off+f.size])
			}
		}
		if le.Uint32(r[60:])&unix.S_IFMT != unix.S_IFDIR && string(r[64:80]) != string(g[64:80]) {
			t.Errorf("%s: size/blocks: ours %x, nydus %x", rn, g[64:80], r[64:80])
		}
	}
}
