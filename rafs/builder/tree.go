package builder

import (
	"fmt"
	"path"
	"sort"
	"strings"
	"syscall"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/layout"
)

// Mode type bits (the same values as syscall.S_IF*).
const (
	modeTypeMask = syscall.S_IFMT
	modeDir      = syscall.S_IFDIR
	modeReg      = syscall.S_IFREG
	modeLnk      = syscall.S_IFLNK
	modeChr      = syscall.S_IFCHR
	modeBlk      = syscall.S_IFBLK
	modeFifo     = syscall.S_IFIFO
	modeSock     = syscall.S_IFSOCK
)

// xattr is one extended attribute, full name included.
type xattr struct {
	Name  string
	Value []byte
}

// chunkRef is where one chunk of a file lives.
type chunkRef struct {
	Digest     [32]byte
	BlobIndex  uint32 // index in the image's blob table
	CI         uint32 // index in the blob's chunk-info array
	UOff       uint64 // uncompressed offset (4 KiB aligned in v6)
	USize      uint32
	COff       uint64
	CSize      uint32
	Compressed bool
}

// inode is one file's metadata; hard links share it.
type inode struct {
	Mode      uint32 // full st_mode
	UID, GID  uint32
	Mtime     int64
	MtimeNsec uint32
	Rdev      uint64 // glibc makedev encoding
	Size      uint64
	Target    string  // symlink target
	Xattrs    []xattr // sorted by name
	Children  []*dentry
	Chunks    []chunkRef // regular files
	Opaque    bool       // directory hides the parent layer's entries

	// source of regular-file data for directory builds
	srcPath string
	// layer bookkeeping, used while merging onto the parent's tree
	whiteouts  []string // names this directory deletes from the layer below
	implicit   bool     // directory made up for a path's parent (no own entry)
	linkTarget string   // hard-link placeholder: the image path it links to
	// set while laying out
	nlink  uint32
	nid    uint64
	ino    uint64
	placed bool
}

// dentry is a name in a directory.
type dentry struct {
	Name string
	Ino  *inode
}

func (n *inode) isDir() bool { return n.Mode&modeTypeMask == modeDir }
func (n *inode) isReg() bool { return n.Mode&modeTypeMask == modeReg }
func (n *inode) isLnk() bool { return n.Mode&modeTypeMask == modeLnk }

// child returns the dentry called name, or nil.
func (n *inode) child(name string) *dentry {
	i := sort.Search(len(n.Children), func(i int) bool { return n.Children[i].Name >= name })
	if i < len(n.Children) && n.Children[i].Name == name {
		return n.Children[i]
	}
	return nil
}

// setChild adds or replaces the entry called name, keeping children sorted.
func (n *inode) setChild(name string, ino *inode) {
	i := sort.Search(len(n.Children), func(i int) bool { return n.Children[i].Name >= name })
	if i < len(n.Children) && n.Children[i].Name == name {
		n.Children[i] = &dentry{Name: name, Ino: ino}
		return
	}
	n.Children = append(n.Children, nil)
	copy(n.Children[i+1:], n.Children[i:])
	n.Children[i] = &dentry{Name: name, Ino: ino}
}

// removeChild deletes the entry called name; it reports whether it existed.
func (n *inode) removeChild(name string) bool {
	i := sort.Search(len(n.Children), func(i int) bool { return n.Children[i].Name >= name })
	if i < len(n.Children) && n.Children[i].Name == name {
		n.Children = append(n.Children[:i], n.Children[i+1:]...)
		return true
	}
	return false
}

// cleanPath turns an archive path into its components, rejecting any path
// that would leave the root (a ".." above the top).
func cleanPath(p string) ([]string, error) {
	var out []string
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "", ".":
		case "..":
			if len(out) == 0 {
				return nil, fmt.Errorf("path %q escapes the root", p)
			}
			out = out[:len(out)-1]
		default:
			out = append(out, c)
		}
	}
	return out, nil
}

// xattrIndex splits a full xattr name into its EROFS prefix index and suffix.
func xattrIndex(name string) (uint8, string, error) {
	idx, suffix, ok := layout.SplitXattrName(name)
	if !ok {
		return 0, "", fmt.Errorf("xattr %q: only user., trusted., security., system.posix_acl_access and system.posix_acl_default are supported", name)
	}
	return idx, suffix, nil
}

// checkXattrs validates names and sizes, and sorts them.
func checkXattrs(xs []xattr) error {
	sort.Slice(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
	total := 12
	for _, x := range xs {
		total += (4 + len(x.Name) + len(x.Value) + 3) &^ 3
		if total > 12+4*0xfffe {
			return fmt.Errorf("xattrs larger than an EROFS inode can hold")
		}
		_, suffix, err := xattrIndex(x.Name)
		if err != nil {
			return err
		}
		if len(suffix) > 255 {
			return fmt.Errorf("xattr %q: name too long", x.Name)
		}
		if len(x.Value) > 65535 {
			return fmt.Errorf("xattr %q: value too long (%d bytes)", x.Name, len(x.Value))
		}
	}
	return nil
}

// walkBFS visits every dentry breadth first, directories' children in name
// order. visit gets the full path, the dentry and whether this is the first
// time its inode is seen.
func walkBFS(root *inode, visit func(p string, d *dentry) error) error {
	type item struct {
		p string
		d *dentry
	}
	queue := []item{{"/", &dentry{Name: "/", Ino: root}}}
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		if err := visit(it.p, it.d); err != nil {
			return err
		}
		if it.d.Ino.isDir() {
			for _, c := range it.d.Ino.Children {
				queue = append(queue, item{path.Join(it.p, c.Name), c})
			}
		}
	}
	return nil
}

// orderInodes returns the unique inodes in BFS order (the root first) and
// sets their link counts.
func orderInodes(root *inode) []*inode {
	var out []*inode
	seen := map[*inode]bool{}
	_ = walkBFS(root, func(_ string, d *dentry) error {
		n := d.Ino
		if !seen[n] {
			seen[n] = true
			n.nlink = 0
			out = append(out, n)
		}
		n.nlink++
		return nil
	})
	for _, n := range out {
		if n.isDir() {
			n.nlink = 2
			for _, c := range n.Children {
				if c.Ino.isDir() {
					n.nlink++
				}
			}
		}
	}
	return out
}

// mergeLayer applies an upper layer's directory onto the lower one (the
// parent image's tree): the upper directory's attributes win unless it was
// made up, an opaque directory hides everything below, whiteouts delete,
// directories merge recursively and anything else replaces.
func mergeLayer(lower, upper *inode) {
	if !upper.implicit {
		lower.Mode, lower.UID, lower.GID = upper.Mode, upper.UID, upper.GID
		lower.Mtime, lower.MtimeNsec, lower.Xattrs = upper.Mtime, upper.MtimeNsec, upper.Xattrs
	}
	if upper.Opaque {
		lower.Children = nil
	}
	for _, w := range upper.whiteouts {
		lower.removeChild(w)
	}
	for _, c := range upper.Children {
		if e := lower.child(c.Name); e != nil && e.Ino.isDir() && c.Ino.isDir() {
			mergeLayer(e.Ino, c.Ino)
			continue
		}
		lower.setChild(c.Name, c.Ino)
	}
}

// resolveLinks replaces hard-link placeholders by the inode they name.
func resolveLinks(root *inode) error {
	return walkBFS(root, func(p string, d *dentry) error {
		for hops := 0; d.Ino.linkTarget != ""; hops++ {
			t := lookup(root, d.Ino.linkTarget)
			if t == nil || hops > 64 {
				return fmt.Errorf("%s: hard link target %s is not in the image", p, d.Ino.linkTarget)
			}
			if t.isDir() {
				return fmt.Errorf("%s: hard link to directory %s", p, d.Ino.linkTarget)
			}
			d.Ino = t
		}
		return nil
	})
}

// dataOrder lists the unique inodes in the order nydus-image stores file
// data: a directory's entries in name order, then each subdirectory in turn
// (the RAFS v5 inode-index order).
func dataOrder(root *inode) []*inode {
	out := []*inode{root}
	seen := map[*inode]bool{root: true}
	var visit func(d *inode)
	visit = func(d *inode) {
		for _, c := range d.Children {
			if !seen[c.Ino] {
				seen[c.Ino] = true
				out = append(out, c.Ino)
			}
		}
		for _, c := range d.Children {
			if c.Ino.isDir() {
				visit(c.Ino)
			}
		}
	}
	visit(root)
	return out
}

// overlayOpaque is the xattr an overlayfs upper directory is made opaque by.
const overlayOpaque = "trusted.overlay.opaque"

// isWhiteoutName handles the OCI markers: it records a whiteout or an
// opaque directory on parent and reports whether name was one.
func isWhiteoutName(spec string, parent *inode, name string) bool {
	if spec != WhiteoutOCI {
		return false
	}
	if name == whiteoutOpaque {
		parent.Opaque = true
		return true
	}
	if w, ok := strings.CutPrefix(name, whiteoutPrefix); ok {
		parent.whiteouts = append(parent.whiteouts, w)
		return true
	}
	return false
}

// isWhiteoutEntry handles the overlayfs markers once the entry is known: a
// 0/0 character device is a whiteout (it reports true: drop the entry), and
// trusted.overlay.opaque=y makes a directory opaque (the xattr is dropped).
func isWhiteoutEntry(spec string, parent *inode, name string, n *inode) bool {
	if spec != WhiteoutOverlayfs {
		return false
	}
	if n.Mode&modeTypeMask == modeChr && n.Rdev == 0 {
		parent.whiteouts = append(parent.whiteouts, name)
		return true
	}
	if n.isDir() {
		for i, x := range n.Xattrs {
			if x.Name == overlayOpaque && string(x.Value) == "y" {
				n.Opaque = true
				n.Xattrs = append(n.Xattrs[:i:i], n.Xattrs[i+1:]...)
				break
			}
		}
	}
	return false
}
