package passthrough

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// FS shares a host directory as a fuse.RawFileSystem.
type FS struct {
	fuse.RawFileSystem // ENOSYS for what is not implemented (locks, ioctl, ...)

	opts    Options
	log     *logrus.Entry
	root    string
	timeout time.Duration

	rootFd  int
	proc    *procFD // this process's /proc/self/fd, for fd-relative access
	handles bool    // identify inodes by file handle
	creds   *credSwitcher

	procFallbacks bool // tests: skip the AT_EMPTY_PATH forms for the procfd ones

	mu     sync.RWMutex
	nodes  map[uint64]*inode
	byKey  map[inodeKey]*inode
	mounts map[int]int // mount ID → fd on that mount, for open_by_handle_at
	nextID uint64

	fds    fdCache
	budget fdBudget
	xattrs *XattrMap // never nil once New returns

	// files maps open file handles to their state. The read and write
	// paths only load from it (no lock shared between requests); entries are
	// added on open and removed on release.
	files  sync.Map // uint64 → *fileHandle
	nextFh atomic.Uint64
	// parkedDirBufs counts the getdents buffers directory handles keep
	// between READDIRs (dir.go, at most maxParkedDirBufs).
	parkedDirBufs atomic.Int64
	// knownEntries counts the READDIRPLUS entries answered with an inode
	// already held (internListed), for tests.
	knownEntries atomic.Uint64
	// listedEntries counts the inodes READDIRPLUS added without an fd
	// (internListed), for tests.
	listedEntries atomic.Uint64
}

var _ fuse.RawFileSystem = (*FS)(nil)

// New opens root and returns a filesystem sharing it.
//
// New leaves the process umask alone (the daemon's socket and files need
// it): inodes are created on threads of their own with umask 0 (see
// credSwitcher), since the guest has applied the caller's umask already.
func New(root string, opts Options) (*FS, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	// Not O_PATH: the root fd is also the mount fd open_by_handle_at needs.
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("passthrough: open shared directory %s: %w", root, err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("passthrough: stat shared directory %s: %w", root, err)
	}
	proc, err := newProcFD(opts.ProcSelfFD, fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	fs := &FS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		opts:          opts,
		log:           opts.Logger.WithField("shared-dir", root),
		root:          root,
		timeout:       opts.Timeout(),
		rootFd:        fd,
		proc:          proc,
		nodes:         map[uint64]*inode{},
		byKey:         map[inodeKey]*inode{},
		mounts:        map[int]int{},
		nextID:        fuse.FUSE_ROOT_ID + 1,
	}
	fs.fds.max = opts.FdCacheSize
	if fs.fds.max <= 0 {
		fs.fds.max = defaultFdCacheSize()
	}
	fs.xattrs = opts.XattrMap
	if fs.xattrs == nil {
		fs.xattrs, _ = ParseXattrMap(DefaultXattrMap)
	}
	fs.fds.budget = &fs.budget
	rootNode := &inode{id: fuse.FUSE_ROOT_ID, ino: st.Ino, dev: st.Dev, mode: st.Mode & syscall.S_IFMT, fd: fd, mountFd: fd, lookups: 1}
	rootNode.key = inodeKey{dev: st.Dev, ino: st.Ino}
	if opts.InodeFileHandles != HandlesNever {
		h, mnt, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
		switch {
		case err == nil:
			fs.handles = true
			fs.mounts[mnt] = fd
			rootNode.key = handleKey(mnt, h)
		case opts.InodeFileHandles == HandlesMandatory:
			unix.Close(fd)
			proc.close()
			return nil, fmt.Errorf("passthrough: file handles are mandatory but %s has none: %w", root, err)
		default:
			fs.log.WithError(err).Warn("no file handles on the shared directory; keeping one O_PATH fd per inode")
		}
	}
	fs.budget.max = int64(opts.MaxOpenFiles)
	if fs.budget.max <= 0 {
		// The LRU's fds are set aside only when it is used: without
		// file handles every inode's fd counts against the budget.
		lru := fs.fds.max
		if !fs.handles {
			lru = 0
		}
		fs.budget.max = int64(defaultFdBudget(lru))
	}
	fs.nodes[rootNode.id] = rootNode
	fs.byKey[rootNode.key] = rootNode
	fs.creds = newCredSwitcher()
	return fs, nil
}

func defaultFdCacheSize() int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur/4 < 64 {
		return 64
	}
	if lim.Cur/4 > 65536 {
		return 65536
	}
	return int(lim.Cur / 4)
}

func handleKey(mnt int, h unix.FileHandle) inodeKey {
	return inodeKey{mnt: mnt, htype: h.Type(), handle: string(h.Bytes())}
}

// String names the filesystem.
func (fs *FS) String() string { return "passthrough(" + fs.root + ")" }

// SetDebug is a no-op: use the logger's level.
func (fs *FS) SetDebug(bool) {}

// Close releases the fds the filesystem holds. Use it after the last
// request.
func (fs *FS) Close() error {
	fs.OnUnmount()
	fs.creds.close()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, fd := range fs.mounts {
		if fd >= 0 && fd != fs.rootFd {
			unix.Close(fd)
		}
	}
	fs.mounts = map[int]int{}
	fs.proc.close()
	return unix.Close(fs.rootFd)
}

// OnUnmount forgets every inode but the root and closes every open file:
// after DESTROY the guest holds nothing (it sends no FORGETs), and a later
// INIT starts afresh.
func (fs *FS) OnUnmount() {
	fs.mu.Lock()
	var gone []*inode
	for id, n := range fs.nodes {
		if id != fuse.FUSE_ROOT_ID {
			gone = append(gone, n)
			delete(fs.nodes, id)
			delete(fs.byKey, n.key)
		}
	}
	fs.mu.Unlock()
	for _, n := range gone {
		fs.fds.forget(n)
	}
	fs.files.Range(func(id, _ any) bool {
		fs.releaseFile(id.(uint64))
		return true
	})
}

// SyncFS syncs the host filesystem holding the node (fsapi.SyncFSer).
func (fs *FS) SyncFS(cancel <-chan struct{}, h *fuse.InHeader) fuse.Status {
	return fs.withFd(h.NodeId, func(n *inode, fd int) error {
		if n.isDir() || n.isReg() {
			rfd, err := fs.reopen(n, fd, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK)
			if err != nil {
				return err
			}
			defer unix.Close(rfd)
			return unix.Syncfs(rfd)
		}
		return syscall.EINVAL
	})
}

// status converts an error to a FUSE status without logging.
func status(err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fuse.Status(errno)
	}
	return fuse.EIO
}

// validName reports whether name is a single path component a create-type
// request may use: not empty, not "." or "..", no '/' and no NUL.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

// node returns the inode for a node ID.
func (fs *FS) node(id uint64) (*inode, fuse.Status) {
	fs.mu.RLock()
	n := fs.nodes[id]
	fs.mu.RUnlock()
	if n == nil {
		return nil, fuse.EBADF
	}
	return n, fuse.OK
}

// withFd runs f with an O_PATH fd for node id.
func (fs *FS) withFd(id uint64, f func(n *inode, fd int) error) fuse.Status {
	n, s := fs.node(id)
	if !s.Ok() {
		return s
	}
	fd, err := fs.fds.acquire(n)
	if err != nil {
		return status(err)
	}
	defer fs.fds.release(n)
	return status(f(n, fd))
}

// openBeneath opens one name under dirfd as O_PATH without following any
// symlink, magic link or "..": the confinement primitive of every lookup.
func openBeneath(dirfd int, name string) (int, error) {
	return unix.Openat2(dirfd, name, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// intern finds or adds the inode open at fd, counts one lookup, and fills
// out. If donate, fd is an O_PATH fd the cache may keep; otherwise the
// caller keeps fd.
func (fs *FS) intern(fd int, donate bool, out *fuse.EntryOut) (*inode, error) {
	var sx unix.Statx_t
	if err := statxFd(fd, "", unix.AT_EMPTY_PATH, &sx); err != nil {
		if donate {
			unix.Close(fd)
		}
		return nil, err
	}
	var st syscall.Stat_t
	statxToStat(&sx, &st)
	key := inodeKey{dev: st.Dev, ino: st.Ino}
	var fh *unix.FileHandle
	mnt := 0
	if fs.handles {
		h, m, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
		switch {
		case err == nil:
			fh, mnt, key = &h, m, handleKey(m, h)
		case fs.opts.InodeFileHandles == HandlesMandatory:
			if donate {
				unix.Close(fd)
			}
			return nil, fmt.Errorf("name_to_handle_at: %w", err)
		}
	}
	fs.mu.Lock()
	if mfd, ok := fs.mounts[mnt]; fh != nil && ok && mfd < 0 {
		fh, key = nil, inodeKey{dev: st.Dev, ino: st.Ino} // mount without usable handles
	}
	n := fs.byKey[key]
	if n != nil && n.sameInode(&sx) {
		n.lookups++
		fs.mu.Unlock()
		if donate {
			fs.fds.offer(n, fd)
		}
		fs.fillEntry(n, &st, out)
		return n, nil
	}
	// No inode, or a listed one whose number the host gave to a new
	// inode since (it had no fd to keep it): this one replaces it under
	// the key; the guest's node of the old one answers ESTALE.
	n = &inode{id: fs.nextID, key: key, ino: st.Ino, dev: st.Dev, mode: st.Mode & syscall.S_IFMT, handle: fh, fd: -1, lookups: 1}
	n.btime, n.hasBtime = sx.Btime, sx.Mask&unix.STATX_BTIME != 0
	if fh != nil {
		mfd, ok := fs.mounts[mnt]
		if !ok {
			// open_by_handle_at wants a real (not O_PATH) fd on the mount.
			// The first inode met on a mount is its root: a directory, or a
			// regular file bind mount; anything else stays pinned.
			mfd = -1
			if n.isDir() || n.isReg() {
				if d, err := fs.proc.open(fd, unix.O_RDONLY|unix.O_NONBLOCK); err == nil {
					mfd = d
				}
			}
			fs.mounts[mnt] = mfd
		}
		if mfd < 0 {
			key = inodeKey{dev: st.Dev, ino: st.Ino}
			if other := fs.byKey[key]; other != nil && other.sameInode(&sx) {
				other.lookups++
				fs.mu.Unlock()
				if donate {
					unix.Close(fd)
				}
				fs.fillEntry(other, &st, out)
				return other, nil
			}
			n.handle, n.key = nil, key
		}
		n.mountFd = mfd
	}
	if n.handle == nil {
		if err := fs.budget.take(); err != nil {
			fs.mu.Unlock()
			if donate {
				unix.Close(fd)
			}
			return nil, err
		}
		pinned := fd
		if !donate {
			var err error
			if pinned, err = fs.proc.open(fd, unix.O_PATH); err != nil {
				fs.mu.Unlock()
				fs.budget.give()
				return nil, err
			}
		}
		n.fd = pinned
		donate = false
	}
	fs.nextID++
	fs.nodes[n.id] = n
	fs.byKey[key] = n
	fs.mu.Unlock()
	if donate {
		fs.fds.offer(n, fd)
	}
	fs.fillEntry(n, &st, out)
	return n, nil
}

// internListed answers a READDIRPLUS entry or a LOOKUP from sx, the
// statx of name in dir, without opening it, and counts one lookup: with
// the inode this filesystem holds under sx's device and inode number if
// sx shows that very inode (sameInode: an inode with an fd cannot have
// had its number recycled; a listed one must have the same birth time
// too; a listed one will open under this name, the last seen), or else
// with a new listed inode (listedName), whose fd is opened on its first
// use, if any: a guest walking a tree or stat'ing paths uses few of the
// inodes it meets (find, ls and stat need only their attributes), and
// each spares an openat2, an fstat and, when the guest forgets it, a
// close. So the answer never reaches an inode that a confined lookup or
// listing did not reach first. It returns nil, counting nothing, when the
// inode is not held and sx has no birth time to tell a recycled number
// apart: the caller looks the name up.
func (fs *FS) internListed(dir *inode, name string, sx *unix.Statx_t, out *fuse.EntryOut) *inode {
	var st syscall.Stat_t
	statxToStat(sx, &st)
	key := inodeKey{dev: st.Dev, ino: st.Ino}
	fs.mu.Lock()
	if n := fs.byKey[key]; n != nil && n.sameInode(sx) {
		n.lookups++
		fs.mu.Unlock()
		fs.knownEntries.Add(1)
		fs.fds.relist(n, dir, name)
		fs.fillEntry(n, &st, out)
		return n
	}
	if sx.Mask&unix.STATX_BTIME == 0 {
		fs.mu.Unlock()
		return nil
	}
	n := &inode{id: fs.nextID, key: key, ino: st.Ino, dev: st.Dev, mode: st.Mode & syscall.S_IFMT, fd: -1, lookups: 1,
		btime: sx.Btime, hasBtime: true}
	n.listed.Store(&listedName{parent: dir, name: name})
	fs.nextID++
	fs.nodes[n.id] = n
	fs.byKey[key] = n
	fs.mu.Unlock()
	fs.listedEntries.Add(1)
	fs.fillEntry(n, &st, out)
	return n
}

// statxMask is what every statx here asks for: what stat(2) gives, and
// the birth time that identifies a listed inode.
const statxMask = unix.STATX_BASIC_STATS | unix.STATX_BTIME

// statxFd is statx(2) of name under dirfd (flags as statx's; the daemon
// never triggers an automount), asking for statxMask.
func statxFd(dirfd int, name string, flags int, sx *unix.Statx_t) error {
	return unix.Statx(dirfd, name, flags|unix.AT_NO_AUTOMOUNT, statxMask, sx)
}

// statxToStat fills st from sx as stat(2) would have (fuse.Attr.FromStat
// and the inode keys take a stat).
func statxToStat(sx *unix.Statx_t, st *syscall.Stat_t) {
	*st = syscall.Stat_t{
		Dev:     unix.Mkdev(sx.Dev_major, sx.Dev_minor),
		Ino:     sx.Ino,
		Nlink:   uint64(sx.Nlink),
		Mode:    uint32(sx.Mode),
		Uid:     sx.Uid,
		Gid:     sx.Gid,
		Rdev:    unix.Mkdev(sx.Rdev_major, sx.Rdev_minor),
		Size:    int64(sx.Size),
		Blksize: int64(sx.Blksize),
		Blocks:  int64(sx.Blocks),
		Atim:    syscall.Timespec{Sec: sx.Atime.Sec, Nsec: int64(sx.Atime.Nsec)},
		Mtim:    syscall.Timespec{Sec: sx.Mtime.Sec, Nsec: int64(sx.Mtime.Nsec)},
		Ctim:    syscall.Timespec{Sec: sx.Ctime.Sec, Nsec: int64(sx.Ctime.Nsec)},
	}
}

func (fs *FS) fillEntry(n *inode, st *syscall.Stat_t, out *fuse.EntryOut) {
	out.NodeId = n.id
	out.Generation = 0 // node IDs are never reused
	out.Attr.FromStat(st)
	out.SetEntryTimeout(fs.timeout)
	out.SetAttrTimeout(fs.timeout)
}

// lookupAt looks name up under the directory open at dirfd.
func (fs *FS) lookupAt(dirfd int, name string, out *fuse.EntryOut) (*inode, error) {
	fd, err := openBeneath(dirfd, name)
	if err != nil {
		return nil, err
	}
	return fs.intern(fd, true, out)
}

// markSubmount flags a directory on another filesystem than its parent
// as a submount root when Options.AnnounceSubmounts is on: the guest then
// gives it its own superblock (st_dev), so inode numbers of different host
// filesystems do not collide.
func (fs *FS) markSubmount(parent, child *inode, out *fuse.EntryOut) {
	if fs.opts.AnnounceSubmounts && child.isDir() && child.dev != parent.dev {
		out.Attr.Flags |= fuse.ATTR_SUBMOUNT
	}
}

// Lookup resolves one name in a directory. "/" and NUL in names are refused
// with EINVAL; "." is the directory itself; ".." is its parent, and the
// parent of the shared directory is the shared directory (as virtiofsd).
func (fs *FS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	if name == "" || strings.ContainsAny(name, "/\x00") {
		return fuse.EINVAL
	}
	if len(name) > 255 {
		return fuse.Status(syscall.ENAMETOOLONG)
	}
	return fs.withFd(h.NodeId, func(p *inode, pfd int) error {
		if !p.isDir() {
			return syscall.ENOTDIR
		}
		switch {
		case name == "." || (name == ".." && p.id == fuse.FUSE_ROOT_ID):
			fd, err := unix.Openat(pfd, ".", unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
			if err != nil {
				return err
			}
			_, err = fs.intern(fd, true, out)
			return err
		case name == "..":
			// The parent of a directory below the shared directory is in
			// the shared directory.
			fd, err := unix.Openat(pfd, "..", unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
			if err != nil {
				return err
			}
			_, err = fs.intern(fd, true, out)
			return err
		}
		n, err := fs.lookupName(p, pfd, name, out)
		if err == nil {
			fs.markSubmount(p, n, out)
		}
		return err
	})
}

// lookupName looks name (one component, not "." or "..") up in the
// directory p open at pfd, for LOOKUP and each READDIRPLUS entry. Without
// file handles one statx of the name (never followed, relative to the
// directory's own fd) comes first and internListed answers from it: with
// an inode the daemon holds already (a warm walk, a repeated stat: no
// openat2, fstat and close of a redundant fd), or with a new listed
// inode, which gets its fd on first use, so a guest that only stats a
// path or lists a directory (stat, find, ls, a loader probing for
// libraries) costs no openat2 and no close. Where the filesystem keeps no
// birth time, and with file handles (inodes are keyed by handle there),
// the name is opened (lookupAt).
func (fs *FS) lookupName(p *inode, pfd int, name string, out *fuse.EntryOut) (*inode, error) {
	if !fs.handles {
		var sx unix.Statx_t
		if err := statxFd(pfd, name, unix.AT_SYMLINK_NOFOLLOW, &sx); err != nil {
			return nil, err
		}
		if n := fs.internListed(p, name, &sx, out); n != nil {
			return n, nil
		}
	}
	return fs.lookupAt(pfd, name, out)
}

// Forget drops nlookup references to a node; at zero the inode and its fd
// go at once.
func (fs *FS) Forget(nodeid, nlookup uint64) {
	if nodeid == fuse.FUSE_ROOT_ID {
		return
	}
	fs.mu.Lock()
	n := fs.nodes[nodeid]
	if n == nil {
		fs.mu.Unlock()
		return
	}
	if nlookup < n.lookups {
		n.lookups -= nlookup
		fs.mu.Unlock()
		return
	}
	delete(fs.nodes, nodeid)
	if fs.byKey[n.key] == n {
		delete(fs.byKey, n.key)
	}
	fs.mu.Unlock()
	fs.fds.forget(n)
}

// Inodes reports how many inodes the guest holds (root included) and how
// many O_PATH fds the LRU keeps open.
func (fs *FS) Inodes() (inodes, cachedFds int) {
	fs.mu.RLock()
	inodes = len(fs.nodes)
	fs.mu.RUnlock()
	return inodes, fs.fds.cached()
}
