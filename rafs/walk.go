package rafs

import "path"

// Walk calls fn for every path in the image, depth first in directory
// order, starting with "/". A directory reached twice (a cycle, or a
// directory hard link) is an error, as is a tree deeper than 4096.
func (img *Image) Walk(fn func(p string, n *Inode) error) error {
	root, err := img.Inode(RootIno)
	if err != nil {
		return err
	}
	seen := map[uint64]bool{}
	var visit func(p string, n *Inode, depth int) error
	visit = func(p string, n *Inode, depth int) error {
		if err := fn(p, n); err != nil || !n.IsDir() {
			return err
		}
		if depth > 4096 {
			return formatErr("%s: directory tree deeper than 4096", p)
		}
		if seen[n.Ino] {
			return formatErr("%s: directory cycle (inode %d reached twice)", p, n.Ino)
		}
		seen[n.Ino] = true
		var kids []DirEntry
		err := img.ReadDir(n.Ino, 0, func(e DirEntry) bool {
			if e.Name != "." && e.Name != ".." {
				kids = append(kids, e)
			}
			return true
		})
		if err != nil {
			return err
		}
		for _, e := range kids {
			c, err := img.Inode(e.Ino)
			if err != nil {
				return err
			}
			if err := visit(path.Join(p, e.Name), c, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return visit("/", root, 0)
}
