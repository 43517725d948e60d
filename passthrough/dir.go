package passthrough

import (
	"errors"
	"sync"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// mkEntry runs a create-type operation under the parent directory as the
// caller (on a creator thread, umask 0: the mode is the guest's as sent),
// then looks the new name up to answer with its entry. What the lookup
// finds is only reported, never changed: another inode renamed there in
// between is the guest's own doing and gets no chmod from the daemon. The parent
// is an O_PATH fd on the directory inode itself: if the guest named a
// symlink as parent, every *at call below fails with ENOTDIR.
func (fs *FS) mkEntry(h *fuse.InHeader, name string, out *fuse.EntryOut, create func(pfd int) error) fuse.Status {
	return fs.inDir(h, name, func(pfd int) error {
		if err := fs.creds.as(h.Caller, func() error { return create(pfd) }); err != nil {
			return err
		}
		_, err := fs.lookupAt(pfd, name, out)
		return err
	})
}

// inDir runs a change of name in the directory h.NodeId with the
// directory's O_PATH fd, after checking the name and the read-only flag.
func (fs *FS) inDir(h *fuse.InHeader, name string, f func(pfd int) error) fuse.Status {
	if !validName(name) {
		return fuse.EINVAL
	}
	if fs.opts.ReadOnly {
		return fuse.EROFS
	}
	return fs.withFd(h.NodeId, func(p *inode, pfd int) error {
		if !p.isDir() {
			return syscall.ENOTDIR
		}
		return f(pfd)
	})
}

// Mkdir makes a directory.
func (fs *FS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return fs.mkEntry(&in.InHeader, name, out, func(pfd int) error {
		return unix.Mkdirat(pfd, name, in.Mode&07777)
	})
}

// Mknod makes a device node, FIFO, socket or regular file. A device node
// made here can never be opened through the daemon (see reopen).
func (fs *FS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return fs.mkEntry(&in.InHeader, name, out, func(pfd int) error {
		return unix.Mknodat(pfd, name, in.Mode, int(in.Rdev))
	})
}

// Symlink makes a symlink. Its target is data to the daemon, never followed.
func (fs *FS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target string, name string, out *fuse.EntryOut) fuse.Status {
	return fs.mkEntry(h, name, out, func(pfd int) error {
		return unix.Symlinkat(target, pfd, name)
	})
}

// Link makes a hard link to a node the guest already knows (hence one inside
// the share); a symlink node is linked itself, never its target.
func (fs *FS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	return fs.withFd(in.Oldnodeid, func(old *inode, ofd int) error {
		return status2err(fs.inDir(&in.InHeader, name, func(pfd int) error {
			if err := fs.linkFd(ofd, pfd, name); err != nil {
				return err
			}
			_, err := fs.lookupAt(pfd, name, out)
			return err
		}))
	})
}

// linkFd links the inode open (O_PATH) at fd as name in the directory
// pfd. linkat with AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH, which the
// daemon keeps only with file handles (without it the kernel answers
// ENOENT); the other way is our fd's entry in /proc/self/fd, followed
// (the magic link lands on the inode itself, even a symlink's), as the C
// virtiofsd links.
func (fs *FS) linkFd(fd, pfd int, name string) error {
	if !fs.procFallbacks {
		err := unix.Linkat(fd, "", pfd, name, unix.AT_EMPTY_PATH)
		if !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	return fs.proc.link(fd, pfd, name)
}

func status2err(s fuse.Status) error {
	if s.Ok() {
		return nil
	}
	return syscall.Errno(s)
}

func (fs *FS) remove(h *fuse.InHeader, name string, flags int) fuse.Status {
	return fs.inDir(h, name, func(pfd int) error {
		fs.pinListed(pfd, name)
		return unix.Unlinkat(pfd, name, flags)
	})
}

// Unlink removes a non-directory.
func (fs *FS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fs.remove(h, name, 0)
}

// Rmdir removes an empty directory.
func (fs *FS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fs.remove(h, name, unix.AT_REMOVEDIR)
}

// Rename renames (rename2 flags RENAME_NOREPLACE, RENAME_EXCHANGE and
// RENAME_WHITEOUT are passed to renameat2, which checks them).
func (fs *FS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName string, newName string) fuse.Status {
	if !validName(oldName) || !validName(newName) {
		return fuse.EINVAL
	}
	if fs.opts.ReadOnly {
		return fuse.EROFS
	}
	return fs.withFd(in.NodeId, func(op *inode, ofd int) error {
		return status2err(fs.withFd(in.Newdir, func(np *inode, nfd int) error {
			if !op.isDir() || !np.isDir() {
				return syscall.ENOTDIR
			}
			fs.pinListed(ofd, oldName)
			fs.pinListed(nfd, newName) // exchanged, or replaced
			return unix.Renameat2(ofd, oldName, nfd, newName, uint(in.Flags))
		}))
	})
}

// pinListed gives a listed inode that is name in the directory pfd its fd
// (acquireListed) before the guest's rename or unlink takes away the name
// it was listed under, so that it stays served as a looked-up inode
// would (an open file, a hard link's other names, a process's working
// directory). Nothing to do with file handles (no inode is listed then).
func (fs *FS) pinListed(pfd int, name string) {
	if fs.handles {
		return
	}
	var sx unix.Statx_t
	if statxFd(pfd, name, unix.AT_SYMLINK_NOFOLLOW, &sx) != nil {
		return
	}
	fs.mu.RLock()
	n := fs.byKey[inodeKey{dev: unix.Mkdev(sx.Dev_major, sx.Dev_minor), ino: sx.Ino}]
	fs.mu.RUnlock()
	if n == nil || !n.sameInode(&sx) {
		return
	}
	if _, err := fs.fds.acquire(n); err == nil {
		fs.fds.release(n)
	}
}

// Readlink returns a symlink's target.
func (fs *FS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	var target []byte
	s := fs.withFd(h.NodeId, func(n *inode, fd int) error {
		if !n.isLink() {
			return syscall.EINVAL
		}
		buf := make([]byte, unix.PathMax)
		k, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return err
		}
		target = buf[:k]
		return nil
	})
	return target, s
}

// OpenDir opens a directory stream.
func (fs *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fs.withFd(in.NodeId, func(n *inode, fd int) error {
		if !n.isDir() {
			return syscall.ENOTDIR
		}
		dfd, err := fs.counted(func() (int, error) { return fs.reopen(n, fd, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC) })
		if err != nil {
			return err
		}
		out.Fh = fs.addFile(dfd, n)
		out.OpenFlags = fs.opts.openFlags(true)
		return nil
	})
}

// ReleaseDir closes a directory stream.
func (fs *FS) ReleaseDir(in *fuse.ReleaseIn) { fs.releaseFile(in.Fh) }

// ReadDir lists entries from the offset on.
func (fs *FS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(in, false, func(h *fileHandle, e fuse.DirEntry) bool {
		return out.AddDirEntry(e)
	})
}

// ReadDirPlus lists entries and looks each up (one lookup count each,
// counted only for entries that fit the reply; "." and ".." get no entry).
func (fs *FS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return fs.readDir(in, true, func(h *fileHandle, e fuse.DirEntry) bool {
		eo := out.AddDirLookupEntry(e)
		if eo == nil {
			return false
		}
		if e.Name == "." || e.Name == ".." {
			return true
		}
		n := fs.plusEntry(h, e.Name, eo)
		if n == nil {
			*eo = fuse.EntryOut{} // vanished: NodeId 0 tells the kernel to skip it
			return true
		}
		fs.markSubmount(h.node, n, eo)
		out.FixMode(eo.Attr.Mode)
		return true
	})
}

// plusEntry looks up a READDIRPLUS entry, name in the directory open at
// h, as LOOKUP does (lookupName: without file handles one statx, and an
// inode the daemon holds already or a new listed one), and fills out; nil
// when it cannot (the name vanished meanwhile).
func (fs *FS) plusEntry(h *fileHandle, name string, out *fuse.EntryOut) *inode {
	n, err := fs.lookupName(h.node, h.fd, name, out)
	if err != nil {
		return nil
	}
	return n
}

// MaxReadDir bounds the bytes of entries one READDIR or READDIRPLUS answers
// with, whatever size the guest asks for (virtiofsd's bound too); the
// kernel asks for a page or a few.
const MaxReadDir = 1 << 20

// getdentsBuf is the size of the buffers getdents64 fills; readDir loops
// until the reply is full, so it need not match the guest's request.
const getdentsBuf = 32 << 10

// getdentsBufs lends getdents buffers to READDIRs. A handle keeps one
// only while it holds entries not listed yet (see readDir), so many open
// directories cost no memory (a buffer as large as each handle's biggest
// request grew RSS by 16 MiB per handle).
var getdentsBufs = sync.Pool{New: func() any { b := make([]byte, getdentsBuf); return &b }}

// maxParkedDirBufs bounds the getdents buffers directory handles keep
// between requests (maxParkedDirBufs x getdentsBuf bytes, 8 MiB): past it
// a reply that stops mid-buffer drops the rest, and the next request reads
// it again from its offset, as every request did before handles kept them.
const maxParkedDirBufs = 256

// direntSize is the bytes a reply spends on e: struct fuse_dirent and the
// name, 8-byte aligned, after the fuse_entry_out with READDIRPLUS.
func direntSize(e *fuse.DirEntry, plus bool) int {
	n := (24 + len(e.Name) + 7) &^ 7
	if plus {
		n += int(unsafe.Sizeof(fuse.EntryOut{}))
	}
	return n
}

// readDir lists entries from in.Offset on into the reply through add,
// until the reply is full, for at most in.Size (and MaxReadDir) bytes.
//
// A guest lists a directory a page at a time (about 24 READDIRPLUS
// entries), each request starting where the last one stopped, while one
// getdents64 call fills a 32 KiB buffer (hundreds of entries). So the
// entries a reply has no room for stay in the handle's buffer for the next
// request, as a C readdir(3) stream keeps its buffer: reading the buffer
// again from the directory for every page made listing a directory
// quadratic in its size (BenchmarkReadDirPages: 1.6 µs per entry at 10,000
// entries against 0.26 µs at 100). A request at another offset drops them
// and seeks.
func (fs *FS) readDir(in *fuse.ReadIn, plus bool, add func(*fileHandle, fuse.DirEntry) bool) fuse.Status {
	h := fs.getFile(in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	defer fs.putFile(h)
	h.dmu.Lock()
	defer h.dmu.Unlock()
	if h.pos != int64(in.Offset) {
		fs.dropDirBuf(h)
		if _, err := unix.Seek(h.fd, int64(in.Offset), unix.SEEK_SET); err != nil {
			h.pos = -1
			return status(err)
		}
		h.pos = int64(in.Offset)
	}
	bp, lo, hi := h.dbuf, h.dlo, h.dhi
	if bp == nil {
		bp, lo, hi = getdentsBufs.Get().(*[]byte), 0, 0
	} else {
		fs.parkedDirBufs.Add(-1) // taken back; putDirBuf counts it again
	}
	h.dbuf, h.dlo, h.dhi = nil, 0, 0
	buf := *bp
	room := min(int(in.Size), MaxReadDir)
	added := false
	for {
		if lo == hi {
			n, err := unix.Getdents(h.fd, buf)
			if err != nil || n <= 0 {
				fs.putDirBuf(h, bp, lo, lo)
				if err != nil {
					h.pos = -1
					if !added {
						return status(err)
					}
				}
				return fuse.OK
			}
			lo, hi = 0, n
		}
		var e fuse.DirEntry
		rec := e.Parse(buf[lo:hi])
		if rec <= 0 {
			fs.putDirBuf(h, bp, lo, lo)
			h.pos = -1
			return fuse.EIO
		}
		if room -= direntSize(&e, plus); room < 0 || !add(h, e) {
			// No room for e: it is the next request's first entry.
			fs.putDirBuf(h, bp, lo, hi)
			return fuse.OK
		}
		added = true
		lo += rec
		h.pos = int64(e.Off)
	}
}

// putDirBuf ends a readDir with buffer bp: the entries (*bp)[lo:hi] not
// listed yet stay with the handle, within maxParkedDirBufs; otherwise the
// buffer goes back to the pool (and the handle's offset is unknown when
// entries were dropped: the fd is past them).
func (fs *FS) putDirBuf(h *fileHandle, bp *[]byte, lo, hi int) {
	if lo < hi {
		if fs.parkedDirBufs.Add(1) <= maxParkedDirBufs {
			h.dbuf, h.dlo, h.dhi = bp, lo, hi
			return
		}
		fs.parkedDirBufs.Add(-1)
		h.pos = -1
	}
	getdentsBufs.Put(bp)
}

// dropDirBuf gives back the handle's buffer of unlisted entries, if any
// (under h.dmu, or when nobody else holds the handle).
func (fs *FS) dropDirBuf(h *fileHandle) {
	if h.dbuf == nil {
		return
	}
	getdentsBufs.Put(h.dbuf)
	h.dbuf, h.dlo, h.dhi = nil, 0, 0
	fs.parkedDirBufs.Add(-1)
}
