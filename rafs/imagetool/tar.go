package imagetool

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// WriteRootEntry writes the tar header of the image's root directory ("./",
// with its mode, owner, mtime and xattrs), which WriteTar leaves out: an
// archive meant to recreate the root's attributes starts with it. The tar
// stream is flushed, not closed, so that WriteTar can follow.
func WriteRootEntry(img *rafs.Image, w io.Writer) error {
	root, err := img.Inode(rafs.RootIno)
	if err != nil {
		return fmt.Errorf("root inode: %w", err)
	}
	h, err := header(img, "./", root)
	if err != nil {
		return fmt.Errorf("root: %w", err)
	}
	h.Typeflag = tar.TypeDir
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	return tw.Flush()
}

// header is the tar header of n named name, with what every entry carries:
// mode bits, owner, mtime with nanoseconds and xattrs as PAX SCHILY.xattr
// records. The caller sets the type.
func header(img *rafs.Image, name string, n *rafs.Inode) (*tar.Header, error) {
	h := &tar.Header{
		Name:    name,
		Mode:    int64(n.Mode & 0o7777),
		Uid:     int(n.UID),
		Gid:     int(n.GID),
		ModTime: time.Unix(int64(n.Mtime), int64(n.MtimeNsec)),
		Format:  tar.FormatPAX,
	}
	xs, err := img.Xattrs(n.Ino)
	if err != nil {
		return nil, err
	}
	for _, x := range xs {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords["SCHILY.xattr."+x.Name] = string(x.Value)
	}
	return h, nil
}

// WriteTar writes the image's tree to w as a tar archive, as
// `nydus-image unpack` does: paths relative to the root, hard links as
// link entries to the first name, device numbers, modes, owners, mtimes
// with nanoseconds and xattrs (PAX SCHILY.xattr records). Sockets are
// skipped (tar cannot hold them).
func WriteTar(ctx context.Context, img *rafs.Image, w io.Writer) error {
	tw := tar.NewWriter(w)
	firstName := map[uint64]string{}
	buf := make([]byte, 1<<20)
	err := img.Walk(func(p string, n *rafs.Inode) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == "/" {
			return nil
		}
		name := strings.TrimPrefix(p, "/")
		h, err := header(img, name, n)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		switch n.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			h.Typeflag, h.Name = tar.TypeDir, name+"/"
		case syscall.S_IFLNK:
			t, err := img.Readlink(n.Ino)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			h.Typeflag, h.Linkname = tar.TypeSymlink, string(t)
		case syscall.S_IFCHR, syscall.S_IFBLK:
			h.Typeflag = tar.TypeChar
			if n.Mode&syscall.S_IFMT == syscall.S_IFBLK {
				h.Typeflag = tar.TypeBlock
			}
			h.Devmajor = int64((n.Rdev >> 8) & 0xfff)
			h.Devminor = int64((n.Rdev & 0xff) | ((n.Rdev >> 12) & 0xfff00))
		case syscall.S_IFIFO:
			h.Typeflag = tar.TypeFifo
		case syscall.S_IFREG:
			if first, ok := firstName[n.Ino]; ok {
				h.Typeflag, h.Linkname = tar.TypeLink, first
				break
			}
			if n.Nlink > 1 {
				firstName[n.Ino] = name
			}
			h.Typeflag, h.Size = tar.TypeReg, int64(n.Size)
		default:
			return nil
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		for off := uint64(0); off < n.Size; {
			got, err := img.ReadAt(ctx, n.Ino, buf[:min(uint64(len(buf)), n.Size-off)], int64(off))
			if err != nil && err != io.EOF {
				return fmt.Errorf("%s: read at %d: %w", p, off, err)
			}
			if got == 0 {
				return fmt.Errorf("%s: short read at %d", p, off)
			}
			if _, err := tw.Write(buf[:got]); err != nil {
				return err
			}
			off += uint64(got)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
