package builder

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// scanImage describes an image through our RAFS reader, in scanTree's form.
func scanImage(t testing.TB, boot, blobDir string) map[string]entryInfo {
	t.Helper()
	img, err := rafs.Open(boot, rafs.Options{Backend: backend.NewLocalFS(blobDir), DigestValidate: true})
	if err != nil {
		t.Fatalf("open %s: %v", boot, err)
	}
	defer img.Close()
	out := map[string]entryInfo{}
	peers := map[uint64][]string{}
	err = img.Walk(func(p string, n *rafs.Inode) error {
		rel := strings.TrimPrefix(p, "/")
		if rel == "" {
			rel = "."
		}
		e := entryInfo{Mode: n.Mode, UID: n.UID, GID: n.GID, Nlink: uint64(n.Nlink),
			Mtime: unix.Timespec{Sec: int64(n.Mtime), Nsec: int64(n.MtimeNsec)}}
		switch n.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			data := make([]byte, n.Size)
			if _, err := img.ReadAt(context.Background(), n.Ino, data, 0); err != nil && n.Size > 0 {
				return fmt.Errorf("%s: read: %w", p, err)
			}
			e.Size = int64(n.Size)
			e.Sum = sha256.Sum256(data)
			peers[n.Ino] = append(peers[n.Ino], rel)
		case unix.S_IFLNK:
			t, err := img.Readlink(n.Ino)
			if err != nil {
				return err
			}
			e.Target, e.Size = string(t), int64(n.Size)
		case unix.S_IFCHR, unix.S_IFBLK:
			e.Rdev = uint64(n.Rdev)
		case unix.S_IFDIR:
			e.Nlink = 0
		}
		xs, err := img.Xattrs(n.Ino)
		if err != nil {
			return err
		}
		var own []xattr
		for _, x := range xs {
			own = append(own, xattr{Name: x.Name, Value: x.Value})
		}
		e.Xattrs = xattrString(own)
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	setLinkPeers(out, peers)
	return out
}

// TestReaderRoundTrip reads every build variant back through our reader.
func TestReaderRoundTrip(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	makeSource(t, src)
	want := scanTree(t, src)
	for _, opts := range []Options{
		{},
		{Digester: DigestSHA256},
		{Compressor: CompressLZ4},
		{Compressor: CompressZstd, ChunkSize: 0x10000},
		{Compressor: CompressZstd, Digester: DigestSHA256},
		{FsVersion: 5},
		{FsVersion: 5, Compressor: CompressLZ4, Digester: DigestSHA256},
		{FsVersion: 5, Compressor: CompressZstd, ChunkSize: 0x10000},
	} {
		t.Run(fmt.Sprintf("v%d-%s-%s-%#x", opts.FsVersion, opts.Compressor, opts.Digester, opts.ChunkSize), func(t *testing.T) {
			out := t.TempDir()
			boot, _, err := BuildDir(src, out, opts)
			if err != nil {
				t.Fatal(err)
			}
			compareTrees(t, want, scanImage(t, boot, out))
		})
	}
}
