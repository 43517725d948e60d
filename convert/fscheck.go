package convert

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// Entry is one path of a filesystem tree as the filesystem rule compares
// it.
type Entry struct {
	Mode         uint32 // type and permission bits
	Size         int64  // regular files
	Major, Minor uint32 // devices
	Target       string // symlinks
	UID, GID     int
	Xattrs       map[string]string
	Digest       string // sha256 of a regular file's data
}

// Tree maps absolute paths (the root excluded) to their entries.
type Tree map[string]*Entry

// SourceTree flattens an OCI image's layers in order (whiteouts and opaque
// directories applied) with go-containerregistry's mutate.Extract, which is
// not our code, and records every entry.
func SourceTree(img v1.Image) (Tree, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	return TarTree(rc)
}

// TarTree reads a flat (already merged) tar into a tree; hard links take
// their target's entry.
func TarTree(r io.Reader) (Tree, error) {
	t := Tree{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return t, nil
		}
		if err != nil {
			return nil, fmt.Errorf("flattened source: %w", err)
		}
		p, ok := treePath(h.Name)
		if !ok {
			continue
		}
		e := &Entry{Mode: uint32(h.Mode) & 0o7777, UID: h.Uid, GID: h.Gid}
		for k, v := range h.PAXRecords {
			if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if e.Xattrs == nil {
					e.Xattrs = map[string]string{}
				}
				e.Xattrs[name] = v
			}
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeRegA:
			e.Mode |= syscall.S_IFREG
			hs := sha256.New()
			n, err := io.Copy(hs, tr)
			if err != nil {
				return nil, fmt.Errorf("flattened source %s: %w", p, err)
			}
			e.Size, e.Digest = n, hex.EncodeToString(hs.Sum(nil))
		case tar.TypeLink:
			lp, _ := treePath(h.Linkname)
			if tgt := t[lp]; tgt != nil {
				t[p] = tgt
			}
			continue
		case tar.TypeDir:
			e.Mode |= syscall.S_IFDIR
		case tar.TypeSymlink:
			e.Mode |= syscall.S_IFLNK
			e.Target = h.Linkname
		case tar.TypeChar:
			e.Mode |= syscall.S_IFCHR
			e.Major, e.Minor = uint32(h.Devmajor), uint32(h.Devminor)
		case tar.TypeBlock:
			e.Mode |= syscall.S_IFBLK
			e.Major, e.Minor = uint32(h.Devmajor), uint32(h.Devminor)
		case tar.TypeFifo:
			e.Mode |= syscall.S_IFIFO
		default:
			continue
		}
		t[p] = e
	}
}

// treePath cleans an archive name into an absolute path; the root and
// names leaving it report false.
func treePath(name string) (string, bool) {
	p := path.Clean("/" + name)
	if p == "/" || strings.Contains(name, "\x00") {
		return "", false
	}
	return p, true
}

// RafsTree walks a RAFS image, reading every regular file's data through
// its backend (so the blobs are fetched, lazily, chunk by chunk).
func RafsTree(ctx context.Context, img *rafs.Image) (Tree, error) {
	t := Tree{}
	buf := make([]byte, 1<<20)
	err := img.Walk(func(p string, n *rafs.Inode) error {
		if p == "/" {
			return nil
		}
		e := &Entry{Mode: n.Mode, UID: int(n.UID), GID: int(n.GID)}
		xs, err := img.Xattrs(n.Ino)
		if err != nil {
			return fmt.Errorf("%s: xattrs: %w", p, err)
		}
		for _, x := range xs {
			if e.Xattrs == nil {
				e.Xattrs = map[string]string{}
			}
			e.Xattrs[x.Name] = string(x.Value)
		}
		switch n.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			hs := sha256.New()
			for off := int64(0); off < int64(n.Size); {
				k, err := img.ReadAt(ctx, n.Ino, buf, off)
				if k > 0 {
					hs.Write(buf[:k])
					off += int64(k)
				}
				if err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("%s: read at %d: %w", p, off, err)
				}
				if k == 0 {
					break
				}
			}
			e.Size, e.Digest = int64(n.Size), hex.EncodeToString(hs.Sum(nil))
		case syscall.S_IFLNK:
			b, err := img.Readlink(n.Ino)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			e.Target = string(b)
		case syscall.S_IFCHR, syscall.S_IFBLK:
			e.Major, e.Minor = unix.Major(uint64(n.Rdev)), unix.Minor(uint64(n.Rdev))
		}
		t[p] = e
		return nil
	})
	return t, err
}

// CompareTrees names every difference between the source tree (want) and
// the Nydus image's (got): missing and extra paths, and per path the type
// and mode, size, device numbers, symlink target, owner, xattrs and data.
func CompareTrees(want, got Tree) []string {
	var diffs []string
	paths := make([]string, 0, len(want)+len(got))
	for p := range want {
		paths = append(paths, p)
	}
	for p := range got {
		if want[p] == nil {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		w, g := want[p], got[p]
		switch {
		case g == nil:
			diffs = append(diffs, p+": missing from the Nydus image")
			continue
		case w == nil:
			diffs = append(diffs, p+": in the Nydus image but not in the source")
			continue
		}
		add := func(what string, a, b any) {
			diffs = append(diffs, fmt.Sprintf("%s: %s %v, source has %v", p, what, b, a))
		}
		if w.Mode != g.Mode {
			add("mode", fmt.Sprintf("%o", w.Mode), fmt.Sprintf("%o", g.Mode))
		}
		if w.Size != g.Size {
			add("size", w.Size, g.Size)
		}
		if w.Major != g.Major || w.Minor != g.Minor {
			add("rdev", fmt.Sprintf("%d:%d", w.Major, w.Minor), fmt.Sprintf("%d:%d", g.Major, g.Minor))
		}
		if w.Target != g.Target {
			add("symlink target", w.Target, g.Target)
		}
		if w.UID != g.UID || w.GID != g.GID {
			add("owner", fmt.Sprintf("%d:%d", w.UID, w.GID), fmt.Sprintf("%d:%d", g.UID, g.GID))
		}
		if !sameXattrs(w.Xattrs, g.Xattrs) {
			add("xattrs", w.Xattrs, g.Xattrs)
		}
		if w.Digest != g.Digest {
			add("content sha256", w.Digest, g.Digest)
		}
	}
	return diffs
}

func sameXattrs(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || !bytes.Equal([]byte(v), []byte(bv)) {
			return false
		}
	}
	return true
}
