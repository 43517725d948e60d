package passthrough

import (
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Extended attributes go through /proc/self/fd/N of the inode's own O_PATH
// fd: the path names our fd, never a guest name, and reaches the inode
// itself (a symlink's magic link is not followed further), without opening
// device nodes or FIFOs. Without Options.Xattr every call answers ENOSYS,
// which makes the guest kernel stop asking, as with virtiofsd.

// GetXAttr reads one attribute (its size when the buffer is empty).
func (fs *FS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	if !fs.opts.Xattr {
		return 0, fuse.ENOSYS
	}
	var sz int
	s := fs.withFd(h.NodeId, func(n *inode, fd int) error {
		var err error
		sz, err = unix.Getxattr(procPath(fd), attr, dest)
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
		var err error
		sz, err = unix.Listxattr(procPath(fd), dest)
		return err
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
	return fs.withFd(in.NodeId, func(n *inode, fd int) error {
		return unix.Setxattr(procPath(fd), attr, data, int(in.Flags))
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
	return fs.withFd(h.NodeId, func(n *inode, fd int) error {
		return unix.Removexattr(procPath(fd), attr)
	})
}
