package builder

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"
)

// whiteout names of the OCI image spec.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// scanTar reads an OCI layer tar (gzip-compressed when gz) into a layer
// tree, feeding regular-file data to the chunker as it goes.
func scanTar(ctx context.Context, r io.Reader, gz bool, whiteouts string, ck *chunker) (*inode, error) {
	if gz {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("malformed tar.gz: %w", err)
		}
		defer zr.Close()
		r = zr
	}
	root := &inode{Mode: modeDir | 0o755, implicit: true}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("malformed tar: %w", err)
		}
		if err := addTarEntry(root, hdr, tr, whiteouts, ck); err != nil {
			return nil, fmt.Errorf("tar entry %q: %w", hdr.Name, err)
		}
	}
	return root, nil
}

func addTarEntry(root *inode, hdr *tar.Header, tr io.Reader, whiteouts string, ck *chunker) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	comps, err := cleanPath(hdr.Name)
	if err != nil {
		return err
	}
	n := &inode{
		Mode:      uint32(hdr.Mode) & 0o7777,
		UID:       uint32(hdr.Uid),
		GID:       uint32(hdr.Gid),
		Mtime:     hdr.ModTime.Unix(),
		MtimeNsec: uint32(hdr.ModTime.Nanosecond()),
	}
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			n.Xattrs = append(n.Xattrs, xattr{Name: name, Value: []byte(v)})
		}
	}
	if err := checkXattrs(n.Xattrs); err != nil {
		return err
	}
	if len(comps) == 0 {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("the root must be a directory")
		}
		root.Mode, root.UID, root.GID, root.Mtime, root.MtimeNsec, root.Xattrs =
			modeDir|n.Mode, n.UID, n.GID, n.Mtime, n.MtimeNsec, n.Xattrs
		root.implicit = false
		return nil
	}
	parent, err := ensureDir(root, comps[:len(comps)-1])
	if err != nil {
		return err
	}
	name := comps[len(comps)-1]
	if isWhiteoutName(whiteouts, parent, name) {
		return nil
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA:
		n.Mode |= modeReg
		n.Size = uint64(hdr.Size)
		if err := ck.addFile(n, tr, "tar entry "+hdr.Name); err != nil {
			return err
		}
	case tar.TypeDir:
		n.Mode |= modeDir
		if e := parent.child(name); e != nil && e.Ino.isDir() {
			e.Ino.Mode, e.Ino.UID, e.Ino.GID, e.Ino.Mtime, e.Ino.MtimeNsec, e.Ino.Xattrs =
				n.Mode, n.UID, n.GID, n.Mtime, n.MtimeNsec, n.Xattrs
			e.Ino.implicit = false
			isWhiteoutEntry(whiteouts, parent, name, e.Ino) // an overlayfs opaque marker
			return nil
		}
	case tar.TypeSymlink:
		if len(hdr.Linkname) > 4096 || hdr.Linkname == "" {
			return fmt.Errorf("symlink target of %d bytes", len(hdr.Linkname))
		}
		n.Mode |= modeLnk
		n.Target = hdr.Linkname
		n.Size = uint64(len(hdr.Linkname))
	case tar.TypeLink:
		tc, err := cleanPath(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hard link: %w", err)
		}
		n = &inode{Mode: modeReg, linkTarget: "/" + path.Join(tc...)}
	case tar.TypeChar, tar.TypeBlock:
		n.Mode |= modeChr
		if hdr.Typeflag == tar.TypeBlock {
			n.Mode = n.Mode&^modeTypeMask | modeBlk
		}
		n.Rdev = unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	case tar.TypeFifo:
		n.Mode |= modeFifo
	default:
		return fmt.Errorf("unsupported entry type %q", hdr.Typeflag)
	}
	if isWhiteoutEntry(whiteouts, parent, name, n) {
		return nil
	}
	parent.setChild(name, n)
	return nil
}

// ensureDir returns the directory at comps under root, making up missing
// ones.
func ensureDir(root *inode, comps []string) (*inode, error) {
	d := root
	for i, c := range comps {
		e := d.child(c)
		if e == nil {
			n := &inode{Mode: modeDir | 0o755, implicit: true}
			d.setChild(c, n)
			d = n
			continue
		}
		if !e.Ino.isDir() {
			return nil, fmt.Errorf("%s is not a directory", "/"+path.Join(comps[:i+1]...))
		}
		d = e.Ino
	}
	return d, nil
}
