package check

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Entry types.
const (
	TypeFile    = "f"
	TypeDir     = "d"
	TypeSymlink = "l"
	TypeFIFO    = "p"
	TypeChar    = "c"
	TypeBlock   = "b"
	TypeSocket  = "s"
)

// Manifest describes a tree: one Entry per path, sorted by path. The root
// itself is the entry ".".
type Manifest struct {
	Entries []Entry `json:"entries"`
}

// Entry is one file, directory, symlink or special file.
type Entry struct {
	Path   string            `json:"p"`           // slash-separated, relative to the root
	Type   string            `json:"t"`           // TypeFile, TypeDir, ...
	Mode   uint32            `json:"m"`           // st_mode & 07777
	UID    uint32            `json:"u"`           // owner
	GID    uint32            `json:"g"`           // group
	Size   int64             `json:"s,omitempty"` // files and symlinks
	Nlink  uint64            `json:"n"`           // link count
	Mtime  int64             `json:"mt"`          // st_mtime in nanoseconds since the epoch
	Rdev   uint64            `json:"r,omitempty"` // st_rdev of a character or block device
	Sum    string            `json:"h,omitempty"` // md5 of a file's content (when hashed)
	Target string            `json:"l,omitempty"` // symlink target
	LinkOf string            `json:"k,omitempty"` // first path (in order) with the same inode
	Xattrs map[string]string `json:"x,omitempty"` // user.* xattrs (when collected)
}

// ManifestOptions select what Build records.
type ManifestOptions struct {
	Hash   bool `json:"hash,omitempty"`   // checksum regular files
	Xattrs bool `json:"xattrs,omitempty"` // collect user.* xattrs
}

// CompareOptions relax Compare for trees served from images.
type CompareOptions struct {
	IgnoreDirNlink bool `json:"ignore_dir_nlink,omitempty"` // directory link counts
	IgnoreOwner    bool `json:"ignore_owner,omitempty"`     // uid/gid
	IgnoreRoot     bool `json:"ignore_root,omitempty"`      // the "." entry
	IgnoreMtime    bool `json:"ignore_mtime,omitempty"`     // mtimes (not preserved, or changed on purpose)
	Xattrs         bool `json:"xattrs,omitempty"`           // compare user.* xattrs
}

// Stats summarises a Build.
type Stats struct {
	Entries int
	Files   int
	Bytes   int64 // bytes hashed
}

// Build walks root (without following symlinks) and describes every entry.
// It reads directories with getdents and stats each name with lstat, the way
// find(1) does, and hard links are recognised by equal (dev, inode) pairs.
func Build(root string, opt ManifestOptions) (*Manifest, Stats, error) {
	var st Stats
	m := &Manifest{}
	type key struct{ dev, ino uint64 }
	firstPath := map[key]string{}
	buf := make([]byte, 1<<20)
	var walk func(rel string) error
	walk = func(rel string) error {
		full := filepath.Join(root, filepath.FromSlash(rel))
		var s unix.Stat_t
		if err := sysLstat(full, &s); err != nil {
			return fmt.Errorf("lstat %s: %w", rel, err)
		}
		e := Entry{Path: rel, Mode: s.Mode & 07777, UID: s.Uid, GID: s.Gid, Nlink: uint64(s.Nlink),
			Mtime: s.Mtim.Nano()}
		st.Entries++
		switch s.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.Type, e.Size = TypeFile, s.Size
			st.Files++
			if s.Nlink > 1 {
				k := key{uint64(s.Dev), s.Ino}
				if p, ok := firstPath[k]; ok {
					e.LinkOf = p
				} else {
					firstPath[k] = rel
				}
			}
			if opt.Hash {
				sum, n, err := hashFile(full, buf)
				if err != nil {
					return fmt.Errorf("hash %s: %w", rel, err)
				}
				e.Sum = sum
				st.Bytes += n
			}
		case unix.S_IFDIR:
			e.Type = TypeDir
		case unix.S_IFLNK:
			t, err := os.Readlink(full)
			if err != nil {
				return fmt.Errorf("readlink %s: %w", rel, err)
			}
			e.Type, e.Target, e.Size = TypeSymlink, t, s.Size
		case unix.S_IFIFO:
			e.Type = TypeFIFO
		case unix.S_IFCHR:
			e.Type, e.Rdev = TypeChar, s.Rdev
		case unix.S_IFBLK:
			e.Type, e.Rdev = TypeBlock, s.Rdev
		case unix.S_IFSOCK:
			e.Type = TypeSocket
		}
		if opt.Xattrs && e.Type != TypeSymlink {
			x, err := userXattrs(full)
			if err != nil {
				return fmt.Errorf("xattrs of %s: %w", rel, err)
			}
			e.Xattrs = x
		}
		m.Entries = append(m.Entries, e)
		if e.Type != TypeDir {
			return nil
		}
		var childErr error
		err := sysWalkDir(full, func(n string) error {
			childErr = walk(path.Join(rel, n))
			return childErr
		})
		if err != nil && childErr == nil {
			return fmt.Errorf("readdir %s: %w", rel, err)
		}
		return err
	}
	if err := walk("."); err != nil {
		return nil, st, err
	}
	sort.Slice(m.Entries, func(i, j int) bool { return m.Entries[i].Path < m.Entries[j].Path })
	// LinkOf names the first path of the group in walk order; make it the
	// first in sorted order so that both sides agree whatever their readdir order.
	relinkSorted(m)
	return m, st, nil
}

// relinkSorted rewrites LinkOf so that it names the smallest path of each
// hard-link group, and clears it on that path itself.
func relinkSorted(m *Manifest) {
	group := map[string][]int{} // walk-order first path -> entry indexes
	for i, e := range m.Entries {
		if e.Type != TypeFile || e.Nlink < 2 {
			continue
		}
		k := e.LinkOf
		if k == "" {
			k = e.Path
		}
		group[k] = append(group[k], i)
	}
	for _, idx := range group {
		first := m.Entries[idx[0]].Path // entries are sorted, so idx[0] is smallest
		for n, i := range idx {
			if n == 0 {
				m.Entries[i].LinkOf = ""
			} else {
				m.Entries[i].LinkOf = first
			}
		}
	}
}

// hashFile returns the md5 of the file at p. md5, not sha256: it detects
// any corruption a backend could cause, and under TCG Go's md5 (assembly)
// runs at about 4 times the speed of its sha256 (generic code without
// SHA-NI/AVX2), which dominated the guest check of the 64 MiB file.
func hashFile(p string, buf []byte) (string, int64, error) {
	h := md5.New()
	n, err := sysReadFile(p, buf, func(b []byte) { h.Write(b) })
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// onlyReader hides WriterTo/ReaderFrom so io.CopyBuffer uses the buffer.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// userXattrs returns the user.* xattrs of p (none when the filesystem does
// not support xattrs).
func userXattrs(p string) (map[string]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	if sz == 0 {
		return nil, nil
	}
	lb := make([]byte, sz)
	sz, err = unix.Llistxattr(p, lb)
	if err != nil {
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	var out map[string]string
	for _, name := range strings.Split(string(lb[:sz]), "\x00") {
		if !strings.HasPrefix(name, "user.") {
			continue
		}
		v, err := getXattr(p, name)
		if err != nil {
			return nil, err
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = v
	}
	return out, nil
}

func getXattr(p, name string) (string, error) {
	vb := make([]byte, 4096)
	n, err := unix.Lgetxattr(p, name, vb)
	if err != nil {
		return "", fmt.Errorf("getxattr %s: %w", name, err)
	}
	return string(vb[:n]), nil
}

// Compare lists every difference between want and got (at most MaxErrors).
func Compare(want, got *Manifest, opt CompareOptions) []string {
	var e Errs
	gm := make(map[string]*Entry, len(got.Entries))
	for i := range got.Entries {
		gm[got.Entries[i].Path] = &got.Entries[i]
	}
	seen := make(map[string]bool, len(want.Entries))
	for i := range want.Entries {
		w := &want.Entries[i]
		seen[w.Path] = true
		if opt.IgnoreRoot && w.Path == "." {
			continue
		}
		g, ok := gm[w.Path]
		if !ok {
			e.Addf("missing: %s", w.Path)
			continue
		}
		compareEntry(&e, w, g, opt)
	}
	for _, g := range got.Entries {
		if !seen[g.Path] && !(opt.IgnoreRoot && g.Path == ".") {
			e.Addf("unexpected: %s (%s)", g.Path, g.Type)
		}
	}
	return e.Strings()
}

func compareEntry(e *Errs, w, g *Entry, opt CompareOptions) {
	p := w.Path
	if w.Type != g.Type {
		e.Addf("%s: type %s, want %s", p, g.Type, w.Type)
		return
	}
	if w.Mode != g.Mode {
		e.Addf("%s: mode %04o, want %04o", p, g.Mode, w.Mode)
	}
	if !opt.IgnoreOwner && (w.UID != g.UID || w.GID != g.GID) {
		e.Addf("%s: owner %d:%d, want %d:%d", p, g.UID, g.GID, w.UID, w.GID)
	}
	if w.Type != TypeDir && w.Size != g.Size {
		e.Addf("%s: size %d, want %d", p, g.Size, w.Size)
	}
	if w.Nlink != g.Nlink && !(w.Type == TypeDir && opt.IgnoreDirNlink) {
		e.Addf("%s: nlink %d, want %d", p, g.Nlink, w.Nlink)
	}
	if !opt.IgnoreMtime && w.Mtime != g.Mtime {
		e.Addf("%s: mtime %s, want %s", p, fmtNanos(g.Mtime), fmtNanos(w.Mtime))
	}
	if w.Rdev != g.Rdev {
		e.Addf("%s: device %d:%d, want %d:%d", p, unix.Major(g.Rdev), unix.Minor(g.Rdev), unix.Major(w.Rdev), unix.Minor(w.Rdev))
	}
	if w.Sum != "" && w.Sum != g.Sum {
		e.Addf("%s: md5 %s, want %s", p, g.Sum, w.Sum)
	}
	if w.Target != g.Target {
		e.Addf("%s: symlink target %q, want %q", p, g.Target, w.Target)
	}
	if w.LinkOf != g.LinkOf {
		e.Addf("%s: same inode as %q, want as %q", p, g.LinkOf, w.LinkOf)
	}
	if opt.Xattrs && !equalXattrs(w.Xattrs, g.Xattrs) {
		e.Addf("%s: xattrs %v, want %v", p, g.Xattrs, w.Xattrs)
	}
}

// fmtNanos shows a time in nanoseconds since the epoch as seconds.nanoseconds.
func fmtNanos(ns int64) string {
	return fmt.Sprintf("%d.%09d", ns/1e9, ns%1e9)
}

func equalXattrs(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// Sub returns the entries under dir (a slash path), re-rooted at dir.
func (m *Manifest) Sub(dir string) *Manifest {
	out := &Manifest{}
	for _, e := range m.Entries {
		switch {
		case e.Path == dir:
			e.Path = "."
		case strings.HasPrefix(e.Path, dir+"/"):
			e.Path = strings.TrimPrefix(e.Path, dir+"/")
			if e.LinkOf != "" {
				e.LinkOf = strings.TrimPrefix(e.LinkOf, dir+"/")
			}
		default:
			continue
		}
		out.Entries = append(out.Entries, e)
	}
	return out
}

// WithoutSums returns a copy with no checksums (a stat-only manifest).
func (m *Manifest) WithoutSums() *Manifest {
	out := &Manifest{Entries: append([]Entry(nil), m.Entries...)}
	for i := range out.Entries {
		out.Entries[i].Sum = ""
	}
	return out
}
