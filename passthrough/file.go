package passthrough

import (
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/fsapi"
	"golang.org/x/sys/unix"
)

var _ fsapi.SyncFSer = (*FS)(nil)

// fileHandle is an open file or directory of the guest. It is reference
// counted so that a RELEASE racing a READ whose reply is still being copied
// cannot close (and let the kernel reuse) the fd under it.
type fileHandle struct {
	id     uint64
	fd     int
	node   *inode
	pinned bool // holds a reference on node's O_PATH fd
	// refs counts the handle table's reference (dropped on release) and
	// one per request using the fd; the fd is closed when it reaches 0.
	refs atomic.Int64

	// Directory stream state (dir.go), under dmu. pos is the offset of
	// the next entry to list: the fd's own offset when dbuf is nil, else
	// the offset of the entry at dbuf[dlo] (the fd is then past dbuf's
	// entries); -1 when unknown.
	dmu      sync.Mutex
	pos      int64
	dbuf     *[]byte // a getdents buffer holding entries not listed yet
	dlo, dhi int     // those entries: (*dbuf)[dlo:dhi]
}

// addFile registers an open file. While it is open its inode keeps its
// O_PATH fd (out of LRU eviction): an unlinked open file has a handle that
// no longer opens, and fchmod, futimens or xattr calls on it still need the
// inode.
func (fs *FS) addFile(fd int, n *inode) uint64 {
	_, err := fs.fds.acquire(n)
	if err != nil {
		fs.log.WithError(err).Debug("no O_PATH fd for an open file")
	}
	id := fs.nextFh.Add(1)
	h := &fileHandle{id: id, fd: fd, node: n, pinned: err == nil} // pos 0: a new fd's offset
	h.refs.Store(1)
	fs.files.Store(id, h)
	return id
}

// getFile returns the open file id with a reference, or nil. It takes no
// lock: a handle whose count already dropped to zero is being closed and is
// treated as gone.
func (fs *FS) getFile(id uint64) *fileHandle {
	v, ok := fs.files.Load(id)
	if !ok {
		return nil
	}
	h := v.(*fileHandle)
	for {
		r := h.refs.Load()
		if r <= 0 {
			return nil
		}
		if h.refs.CompareAndSwap(r, r+1) {
			return h
		}
	}
}

// putFile drops a reference taken by getFile.
func (fs *FS) putFile(h *fileHandle) {
	if h.refs.Add(-1) == 0 {
		fs.closeFile(h)
	}
}

func (fs *FS) closeFile(h *fileHandle) {
	fs.dropDirBuf(h)
	unix.Close(h.fd)
	fs.budget.give()
	if h.pinned {
		fs.fds.release(h.node)
	}
}

// releaseFile forgets the handle; its fd closes once the last request using
// it is done.
func (fs *FS) releaseFile(id uint64) {
	if v, ok := fs.files.LoadAndDelete(id); ok {
		fs.putFile(v.(*fileHandle))
	}
}

// withFile runs f on an open file's fd.
func (fs *FS) withFile(id uint64, f func(h *fileHandle) error) fuse.Status {
	h := fs.getFile(id)
	if h == nil {
		return fuse.EBADF
	}
	defer fs.putFile(h)
	return status(f(h))
}

// openFlags turns the guest's open flags into host ones: no O_CREAT/O_EXCL/
// O_NOCTTY (the inode exists), no O_DIRECT unless allowed, always CLOEXEC.
// O_APPEND stays: Linux pwrite on an O_APPEND fd appends at the real end of
// file, which is what the guest asked for.
func (fs *FS) hostOpenFlags(flags uint32) int {
	f := int(flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY)
	if !fs.opts.AllowDirectIO {
		f &^= unix.O_DIRECT
	}
	return f | unix.O_CLOEXEC
}

// reopen opens the inode for I/O without any path walk: by file handle, or
// through our own O_PATH fd's entry in /proc/self/fd. Only regular files and
// directories may be opened (as virtiofsd): a device node the guest made
// must never make the daemon open a host device.
func (fs *FS) reopen(n *inode, fd int, flags int) (int, error) {
	if !n.isReg() && !n.isDir() {
		return -1, syscall.EBADF
	}
	if n.handle != nil {
		return unix.OpenByHandleAt(n.mountFd, *n.handle, flags)
	}
	return fs.proc.open(fd, flags&^unix.O_NOFOLLOW)
}

// fileOpenFlags is the FOPEN_* answer for a file opened with host flags:
// the cache mode's, plus direct I/O for O_DIRECT when it is allowed
// through (virtiofsd --allow-direct-io), plus FOPEN_NOFLUSH for a
// read-only open: FLUSH of such a file has nothing to do (no dirty data,
// and this filesystem takes no host locks for it to release), so the guest
// is told to skip the round trip at each close (Linux 5.16; older guests
// ignore the flag, and guests with a writeback cache send FLUSH anyway).
func (fs *FS) fileOpenFlags(flags int) uint32 {
	fl := fs.opts.openFlags(false)
	if fs.opts.AllowDirectIO && flags&unix.O_DIRECT != 0 {
		fl |= fuse.FOPEN_DIRECT_IO
	}
	if !writeFlags(flags) {
		fl |= fuse.FOPEN_NOFLUSH
	}
	return fl
}

func writeFlags(flags int) bool {
	return flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0
}

// Open opens a file.
func (fs *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	flags := fs.hostOpenFlags(in.Flags)
	if fs.opts.ReadOnly && writeFlags(flags) {
		return fuse.EROFS
	}
	return fs.withFd(in.NodeId, func(n *inode, fd int) error {
		if n.isDir() {
			return syscall.EISDIR
		}
		ffd, err := fs.counted(func() (int, error) { return fs.reopen(n, fd, flags) })
		if err != nil {
			return err
		}
		if in.Mode&fuse.OPEN_KILL_SUIDGID != 0 && flags&unix.O_TRUNC != 0 {
			if err := fs.killPriv(ffd); err != nil {
				fs.uncount(ffd)
				return err
			}
		}
		out.Fh = fs.addFile(ffd, n)
		out.OpenFlags = fs.fileOpenFlags(flags)
		return nil
	})
}

// Create creates and opens a file as the caller. The new name is always
// made with O_EXCL|O_NOFOLLOW under RESOLVE_NO_SYMLINKS, so a symlink there is
// ELOOP, never followed. Without the guest's O_EXCL an existing name is then
// looked up and opened like Open: only a regular file, so that a FIFO cannot
// block the daemon and a device node the guest made cannot open a host
// device.
func (fs *FS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	flags := fs.hostOpenFlags(in.Flags)
	return fs.inDir(&in.InHeader, name, func(pfd int) error {
		ffd, err := fs.createAs(in.Caller, pfd, name, flags|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, in.Mode)
		if err == unix.EEXIST && in.Flags&unix.O_EXCL == 0 {
			return fs.openExisting(pfd, name, flags, out)
		}
		if err != nil {
			return err
		}
		return fs.adoptCreated(ffd, flags, out)
	})
}

// createAs makes and opens name under pfd as the caller (openat2 with
// flags, which include O_CREAT or O_TMPFILE), counted in the fd budget.
func (fs *FS) createAs(caller fuse.Caller, pfd int, name string, flags int, mode uint32) (int, error) {
	return fs.counted(func() (ffd int, err error) {
		err = fs.creds.as(caller, func() error {
			ffd, err = unix.Openat2(pfd, name, &unix.OpenHow{
				Flags:   uint64(flags),
				Mode:    uint64(mode & 07777),
				Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
			})
			return err
		})
		return ffd, err
	})
}

// adoptCreated finishes a file the guest created (its mode is the guest's
// already: creator threads have umask 0): it interns the inode and opens a
// handle on ffd. It closes ffd on failure.
func (fs *FS) adoptCreated(ffd int, flags int, out *fuse.CreateOut) error {
	n, err := fs.intern(ffd, false, &out.EntryOut)
	if err != nil {
		fs.uncount(ffd)
		return err
	}
	out.Fh = fs.addFile(ffd, n)
	out.OpenFlags = fs.fileOpenFlags(flags)
	return nil
}

// Tmpfile makes an unnamed file in the directory (O_TMPFILE) as the
// caller; the guest may give it a name later with LINK.
func (fs *FS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	if fs.opts.ReadOnly {
		return fuse.EROFS
	}
	flags := fs.hostOpenFlags(in.Flags) &^ (unix.O_TMPFILE | unix.O_TRUNC)
	if flags&unix.O_ACCMODE == unix.O_RDONLY {
		return fuse.EINVAL
	}
	return fs.withFd(in.NodeId, func(p *inode, pfd int) error {
		if !p.isDir() {
			return syscall.ENOTDIR
		}
		ffd, err := fs.createAs(in.Caller, pfd, ".", flags|unix.O_TMPFILE, in.Mode)
		if err != nil {
			return err
		}
		return fs.adoptCreated(ffd, flags, out)
	})
}

// openExisting answers a CREATE without O_EXCL whose name exists.
func (fs *FS) openExisting(pfd int, name string, flags int, out *fuse.CreateOut) error {
	n, err := fs.lookupAt(pfd, name, &out.EntryOut)
	if err != nil {
		return err
	}
	var ffd int
	s := fs.withFd(n.id, func(n *inode, fd int) error {
		if n.isDir() {
			return syscall.EISDIR
		}
		var err error
		ffd, err = fs.counted(func() (int, error) { return fs.reopen(n, fd, flags) })
		return err
	})
	if !s.Ok() {
		fs.Forget(n.id, 1)
		return syscall.Errno(s)
	}
	out.Fh = fs.addFile(ffd, n)
	out.OpenFlags = fs.fileOpenFlags(flags)
	return nil
}

// readResult is fsapi's zero-copy file result that also holds the open
// file until the transport has copied the data (Done).
type readResult struct {
	fsapi.SegmentedResult
	fs   *FS
	h    *fileHandle
	done atomic.Bool
}

func (r *readResult) Done() {
	if r.done.CompareAndSwap(false, true) {
		r.SegmentedResult.Done()
		r.fs.putFile(r.h)
	}
}

// Read returns the file range as an fd segment (fsapi.FileResult): the
// transport preadv's it straight into the guest's buffers.
func (fs *FS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h := fs.getFile(in.Fh)
	if h == nil {
		return nil, fuse.EBADF
	}
	res := fsapi.FileResult(h.fd, int64(in.Offset), int(in.Size)).(fsapi.SegmentedResult)
	return &readResult{SegmentedResult: res, fs: fs, h: h}, fuse.OK
}

// Write writes data at the offset (appending on O_APPEND files).
func (fs *FS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	return fs.Writev(cancel, in, [][]byte{data})
}

// Writev pwritev's the guest's payload straight from its buffers. With
// FUSE_WRITE_KILL_SUIDGID (the kernel's killpriv_v2 request for an
// unprivileged writer) it clears set-user-ID and set-group-ID (the latter
// only with group execute) as the kernel would.
func (fs *FS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if fs.opts.ReadOnly {
		return 0, fuse.EROFS
	}
	var written uint32
	s := fs.withFile(in.Fh, func(h *fileHandle) error {
		off := int64(in.Offset)
		for len(data) > 0 {
			n, err := unix.Pwritev(h.fd, data[:min(len(data), iovMax)], off)
			if err != nil {
				if err == unix.EINTR {
					continue
				}
				if written > 0 {
					break
				}
				return err
			}
			if n == 0 {
				break
			}
			written += uint32(n)
			off += int64(n)
			data = skipBytes(data, n)
		}
		if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
			return fs.killPriv(h.fd)
		}
		return nil
	})
	return written, s
}

// iovMax is Linux's IOV_MAX: pwritev takes at most that many buffers.
const iovMax = 1024

func skipBytes(iov [][]byte, n int) [][]byte {
	for len(iov) > 0 && n >= len(iov[0]) {
		n -= len(iov[0])
		iov = iov[1:]
	}
	if len(iov) > 0 && n > 0 {
		iov = append([][]byte{iov[0][n:]}, iov[1:]...)
	}
	return iov
}

// killPriv clears set-user-ID, and set-group-ID when group execute is set,
// on the inode open (possibly O_PATH) at fd, as the kernel does when an
// unprivileged caller writes or truncates.
func (fs *FS) killPriv(fd int) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return err
	}
	mode := st.Mode & 07777
	kill := uint32(unix.S_ISUID)
	if mode&unix.S_IXGRP != 0 {
		kill |= unix.S_ISGID
	}
	if mode&kill == 0 {
		return nil
	}
	return fs.chmodFd(&inode{mode: st.Mode & syscall.S_IFMT}, fd, mode&^kill)
}

// Flush is called on every close of a guest fd opened for writing (a
// read-only open answers FOPEN_NOFLUSH, see fileOpenFlags): closing a dup
// makes the host filesystem see the close (NFS flushes its dirty pages).
func (fs *FS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	return fs.withFile(in.Fh, func(h *fileHandle) error {
		d, err := unix.Dup(h.fd)
		if err != nil {
			return err
		}
		return unix.Close(d)
	})
}

// Fsync syncs a file (data only when the guest asks fdatasync).
func (fs *FS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fs.withFile(in.Fh, func(h *fileHandle) error {
		if in.FsyncFlags&1 != 0 {
			return unix.Fdatasync(h.fd)
		}
		return unix.Fsync(h.fd)
	})
}

// FsyncDir syncs a directory.
func (fs *FS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fs.Fsync(cancel, in)
}

// Release closes an open file.
func (fs *FS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) { fs.releaseFile(in.Fh) }

// Fallocate preallocates or punches (any fallocate(2) mode).
func (fs *FS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if fs.opts.ReadOnly {
		return fuse.EROFS
	}
	return fs.withFile(in.Fh, func(h *fileHandle) error {
		return unix.Fallocate(h.fd, in.Mode, int64(in.Offset), int64(in.Length))
	})
}

// Lseek answers SEEK_DATA and SEEK_HOLE (and the plain whences).
func (fs *FS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	return fs.withFile(in.Fh, func(h *fileHandle) error {
		off, err := unix.Seek(h.fd, int64(in.Offset), int(in.Whence))
		if err != nil {
			return err
		}
		out.Offset = uint64(off)
		return nil
	})
}

// CopyFileRange copies between two open files on the host.
func (fs *FS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	if fs.opts.ReadOnly {
		return 0, fuse.EROFS
	}
	src := fs.getFile(in.FhIn)
	if src == nil {
		return 0, fuse.EBADF
	}
	defer fs.putFile(src)
	var n int
	s := fs.withFile(in.FhOut, func(dst *fileHandle) error {
		offIn, offOut := int64(in.OffIn), int64(in.OffOut)
		var err error
		n, err = unix.CopyFileRange(src.fd, &offIn, dst.fd, &offOut, int(in.Len), int(in.Flags))
		return err
	})
	return uint32(n), s
}
