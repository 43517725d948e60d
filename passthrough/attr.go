package passthrough

import (
	"errors"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

func (fs *FS) attrOut(st *syscall.Stat_t, out *fuse.AttrOut) {
	out.Attr.FromStat(st)
	out.SetTimeout(fs.timeout)
}

// GetAttr stats a node, or the open file when the kernel names one.
func (fs *FS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	var st syscall.Stat_t
	if in.Flags()&fuse.FUSE_GETATTR_FH != 0 {
		if h := fs.getFile(in.Fh()); h != nil {
			defer fs.putFile(h)
			if err := syscall.Fstat(h.fd, &st); err != nil {
				return status(err)
			}
			fs.attrOut(&st, out)
			return fuse.OK
		}
	}
	return fs.withFd(in.NodeId, func(n *inode, fd int) error {
		if err := syscall.Fstat(fd, &st); err != nil {
			return err
		}
		fs.attrOut(&st, out)
		return nil
	})
}

// SetAttr changes mode, owner, size and times. It runs with the daemon's
// credentials, as virtiofsd's: the guest kernel has checked permissions.
func (fs *FS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if fs.opts.ReadOnly {
		return fuse.EROFS
	}
	var fh *fileHandle
	if fhID, ok := in.GetFh(); ok {
		if fh = fs.getFile(fhID); fh != nil {
			defer fs.putFile(fh)
		}
	}
	return fs.withFd(in.NodeId, func(n *inode, fd int) error {
		if mode, ok := in.GetMode(); ok {
			if err := fs.chmodFd(n, fd, mode&07777); err != nil {
				return err
			}
		}
		uid, uok := in.GetUID()
		gid, gok := in.GetGID()
		if uok || gok {
			u, g := -1, -1
			if uok {
				u = int(uid)
			}
			if gok {
				g = int(gid)
			}
			if err := unix.Fchownat(fd, "", u, g, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return err
			}
		}
		if size, ok := in.GetSize(); ok {
			if err := fs.truncate(n, fd, fh, int64(size)); err != nil {
				return err
			}
		}
		if in.Valid&fuse.FATTR_KILL_SUIDGID != 0 && n.isReg() {
			if err := fs.killPriv(fd); err != nil {
				return err
			}
		}
		if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
			ts := []unix.Timespec{
				setTime(in.Valid, fuse.FATTR_ATIME, fuse.FATTR_ATIME_NOW, in.Atime, in.Atimensec),
				setTime(in.Valid, fuse.FATTR_MTIME, fuse.FATTR_MTIME_NOW, in.Mtime, in.Mtimensec),
			}
			if err := fs.utimes(n, fd, ts); err != nil {
				return err
			}
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			return err
		}
		fs.attrOut(&st, out)
		return nil
	})
}

func setTime(valid, set, now uint32, sec uint64, nsec uint32) unix.Timespec {
	switch {
	case valid&set == 0:
		return unix.Timespec{Nsec: unix.UTIME_OMIT}
	case valid&now != 0:
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
}

// chmodFd changes the mode of the inode open (O_PATH) at fd: fchmodat2 with
// AT_EMPTY_PATH where the kernel has it, else through our fd's entry in
// /proc/self/fd (symlink modes cannot change on Linux anyway).
func (fs *FS) chmodFd(n *inode, fd int, mode uint32) error {
	if !fs.procFallbacks {
		err := unix.Fchmodat(fd, "", mode, unix.AT_EMPTY_PATH)
		if err == nil || n.isLink() || !(errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)) {
			return err
		}
	}
	return fs.proc.chmod(fd, mode)
}

// truncate sets a size: on the guest's open file when it names one, else on
// the regular file behind the node's O_PATH fd.
func (fs *FS) truncate(n *inode, fd int, fh *fileHandle, size int64) error {
	if fh != nil {
		return unix.Ftruncate(fh.fd, size)
	}
	switch {
	case n.isDir():
		return syscall.EISDIR
	case !n.isReg():
		return syscall.EINVAL
	}
	return fs.proc.truncate(fd, size)
}

// utimes sets the times of the inode open (O_PATH) at fd: utimensat with
// AT_EMPTY_PATH, else through our fd's entry in /proc/self/fd.
func (fs *FS) utimes(n *inode, fd int, ts []unix.Timespec) error {
	if !fs.procFallbacks {
		err := unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH)
		if err == nil || n.isLink() || !(errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT)) {
			return err
		}
	}
	return fs.proc.utimes(fd, ts)
}

// StatFs reports the host filesystem holding the node.
func (fs *FS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	return fs.withFd(h.NodeId, func(n *inode, fd int) error {
		var st syscall.Statfs_t
		if err := syscall.Fstatfs(fd, &st); err != nil {
			return err
		}
		out.FromStatfsT(&st)
		return nil
	})
}

// Access checks the caller's permission from the inode's mode and owner
// (the kernel only asks without default_permissions).
func (fs *FS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	return fs.withFd(in.NodeId, func(n *inode, fd int) error {
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			return err
		}
		mask := in.Mask & 7
		if mask&unix.W_OK != 0 && fs.opts.ReadOnly {
			return syscall.EROFS
		}
		if in.Uid == 0 {
			if mask&unix.X_OK != 0 && st.Mode&0111 == 0 && st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
				return syscall.EACCES
			}
			return nil
		}
		var bits uint32
		switch {
		case st.Uid == in.Uid:
			bits = (st.Mode >> 6) & 7
		case st.Gid == in.Gid:
			bits = (st.Mode >> 3) & 7
		default:
			bits = st.Mode & 7
		}
		if mask&^bits != 0 {
			return syscall.EACCES
		}
		return nil
	})
}
