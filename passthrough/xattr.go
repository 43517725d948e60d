package passthrough

import (
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Extended attributes are reached through the inode's own O_PATH fd, by its
// entry "N" in /proc/self/fd relative to the procfs fd (procFD.xattr): the
// name is our fd number, never a guest string, and the magic link lands on
// the inode itself (a symlink is not followed further), without opening
// device nodes or FIFOs. Without Options.Xattr every call answers ENOSYS,
// which makes the guest kernel stop asking, as with virtiofsd. Names go
// through Options.XattrMap (by default, trusted.* from the guest is
// refused: see DefaultXattrMap).

// GetXAttr reads one attribute (its size when the buffer is empty).
func (fs *FS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	if !fs.opts.Xattr {
		return 0, fuse.ENOSYS
	}
	attr, err := fs.xattrs.toHost(attr, true)
	if err != nil {
		return 0, status(err)
	}
	var sz int
	s := fs.withFd(h.NodeId, func(n *inode, fd int) error {
		var err error
		sz, err = fs.proc.xattr(n, fd, xattrCall{
			at:   func(dirfd int, name string) (int, error) { return getxattrat(dirfd, name, attr, dest) },
			fd:   func(fd int) (int, error) { return unix.Fgetxattr(fd, attr, dest) },
			path: func(name string) (int, error) { return unix.Getxattr(name, attr, dest) },
		})
		return err
	})
	return uint32(sz), s
}

// ListXAttr lists the attribute names (the size when the buffer is empty).
func (fs *FS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	if !fs.opts.Xattr {
		return 0, fuse.ENOSYS
	}
	var sz int
	s := fs.withFd(h.NodeId, func(n *inode, fd int) error {
		list := func(dest []byte) (int, error) {
			return fs.proc.xattr(n, fd, xattrCall{
				at:   func(dirfd int, name string) (int, error) { return listxattrat(dirfd, name, dest) },
				fd:   func(fd int) (int, error) { return unix.Flistxattr(fd, dest) },
				path: func(name string) (int, error) { return unix.Listxattr(name, dest) },
			})
		}
		// Read the whole host list, translate, then answer the
		// size or the names.
		var host []byte
		for {
			n, err := list(nil)
			if err != nil {
				return err
			}
			if n == 0 {
				host = nil
				break
			}
			host = make([]byte, n)
			n, err = list(host)
			if err == unix.ERANGE {
				continue // grew meanwhile
			}
			if err != nil {
				return err
			}
			host = host[:n]
			break
		}
		guest := fs.xattrs.listToGuest(host)
		sz = len(guest)
		if len(dest) == 0 {
			return nil
		}
		if len(dest) < sz {
			return unix.ERANGE
		}
		copy(dest, guest)
		return nil
	})
	return uint32(sz), s
}

// SetXAttr sets one attribute.
func (fs *FS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	if !fs.opts.Xattr {
		return fuse.ENOSYS
	}
	if fs.opts.ReadOnly {
		return fuse.EROFS
	}
	attr, err := fs.xattrs.toHost(attr, false)
	if err != nil {
		return status(err)
	}
	flags := int(in.Flags)
	return fs.withFd(in.NodeId, func(n *inode, fd int) error {
		_, err := fs.proc.xattr(n, fd, xattrCall{
			at:   func(dirfd int, name string) (int, error) { return 0, setxattrat(dirfd, name, attr, data, flags) },
			fd:   func(fd int) (int, error) { return 0, unix.Fsetxattr(fd, attr, data, flags) },
			path: func(name string) (int, error) { return 0, unix.Setxattr(name, attr, data, flags) },
		})
		return err
	})
}

// RemoveXAttr removes one attribute.
func (fs *FS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	if !fs.opts.Xattr {
		return fuse.ENOSYS
	}
	if fs.opts.ReadOnly {
		return fuse.EROFS
	}
	attr, err := fs.xattrs.toHost(attr, false)
	if err != nil {
		return status(err)
	}
	return fs.withFd(h.NodeId, func(n *inode, fd int) error {
		_, err := fs.proc.xattr(n, fd, xattrCall{
			at:   func(dirfd int, name string) (int, error) { return 0, removexattrat(dirfd, name, attr) },
			fd:   func(fd int) (int, error) { return 0, unix.Fremovexattr(fd, attr) },
			path: func(name string) (int, error) { return 0, unix.Removexattr(name, attr) },
		})
		return err
	})
}
