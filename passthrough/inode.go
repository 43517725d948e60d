package passthrough

import (
	"container/list"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// inodeKey identifies a host inode. With file handles it is the handle (which
// carries the generation, so a recycled inode number never aliases a deleted
// file); without, it is (dev, ino), which cannot be recycled while the pinned
// O_PATH fd keeps the inode alive. A listed inode (see listedName) has no fd
// yet: its birth time tells a recycled number apart.
type inodeKey struct {
	mnt    int
	htype  int32
	handle string
	dev    uint64
	ino    uint64
}

// inode is a host inode the guest knows by a node ID.
type inode struct {
	id   uint64
	key  inodeKey
	ino  uint64
	dev  uint64
	mode uint32 // S_IFMT bits only

	// handle is nil when the inode is held by a pinned O_PATH fd.
	handle  *unix.FileHandle
	mountFd int

	// btime is the inode's birth time (statx), set when the inode is
	// added and never changed; hasBtime is false where the filesystem
	// keeps none. With dev and ino it tells the inode from a later one
	// given the same number (sameInode).
	btime    unix.StatxTimestamp
	hasBtime bool

	lookups uint64 // guarded by FS.mu

	// guarded by fdCache.mu
	fd   int           // O_PATH fd or -1
	refs int           // operations using fd
	elem *list.Element // position in the LRU, nil when not cached
	dead bool          // forgotten: close fd when refs drops to 0

	// listed is where to open a listed inode's fd; nil once it has one
	// (or is forgotten). Cleared under fdCache.mu; read, and moved to
	// the name last seen (relist), without it.
	listed atomic.Pointer[listedName]
}

// listedName is where a READDIRPLUS listing met an inode it answered
// without opening it (FS.internListed): the directory's inode and the
// entry's name. The inode's first operation that needs an fd opens the
// name there, confined as every lookup, and keeps the fd only if it is
// still the same inode (acquireListed); then the inode is pinned like a
// looked-up one and forgets its listedName.
type listedName struct {
	parent *inode
	name   string
}

// sameInode reports whether sx (a statx with STATX_BTIME asked) shows n
// itself: the same device and inode number, and, where n has a birth
// time, the same birth time.
func (n *inode) sameInode(sx *unix.Statx_t) bool {
	if unix.Mkdev(sx.Dev_major, sx.Dev_minor) != n.dev || sx.Ino != n.ino {
		return false
	}
	return !n.hasBtime || (sx.Mask&unix.STATX_BTIME != 0 && sx.Btime == n.btime)
}

func (n *inode) isDir() bool  { return n.mode == syscall.S_IFDIR }
func (n *inode) isReg() bool  { return n.mode == syscall.S_IFREG }
func (n *inode) isLink() bool { return n.mode == syscall.S_IFLNK }

// fdCache keeps O_PATH fds of handle-identified inodes open, least recently
// used first out, so that a guest remembering a million inodes costs a
// million small handles but at most max fds. Inodes without a handle keep
// their fd pinned outside the LRU.
type fdCache struct {
	mu     sync.Mutex
	lru    list.List
	max    int
	open   int
	budget *fdBudget // counts pinned fds (inodes without a handle)
}

// acquire returns an O_PATH fd for n that stays valid until release(n).
func (c *fdCache) acquire(n *inode) (int, error) {
	c.mu.Lock()
	if n.fd >= 0 {
		n.refs++
		if n.elem != nil {
			c.lru.MoveToFront(n.elem)
		}
		c.mu.Unlock()
		return n.fd, nil
	}
	listed := n.listed.Load()
	c.mu.Unlock()
	if listed != nil {
		return c.acquireListed(n, listed)
	}
	if n.handle == nil {
		return -1, syscall.ESTALE
	}
	fd, err := unix.OpenByHandleAt(n.mountFd, *n.handle, unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("open_by_handle_at: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n.fd >= 0 { // another request opened it meanwhile
		n.refs++
		c.lru.MoveToFront(n.elem)
		unix.Close(fd)
		return n.fd, nil
	}
	n.fd, n.refs = fd, 1
	n.elem = c.lru.PushFront(n)
	c.open++
	c.evictLocked()
	return fd, nil
}

// acquireListed is acquire for an inode met in a listing, which has no
// fd yet: it looks the name up again in the directory it was listed in
// (openBeneath from the directory inode's own fd, as every lookup) and
// pins the fd as intern does a looked-up inode's, counted in the budget.
// A name that is gone, or that is another inode now (renamed or replaced
// on the host since the listing), answers ESTALE, as an inode whose file
// handle no longer opens does; the guest's VFS then looks the path up
// again. So is a directory the guest has forgotten.
func (c *fdCache) acquireListed(n *inode, at *listedName) (int, error) {
	pfd, err := c.acquire(at.parent)
	if err != nil {
		return -1, syscall.ESTALE
	}
	fd, err := openBeneath(pfd, at.name)
	c.release(at.parent)
	if err != nil {
		return -1, syscall.ESTALE
	}
	var sx unix.Statx_t
	if err := statxFd(fd, "", unix.AT_EMPTY_PATH, &sx); err != nil || !n.sameInode(&sx) {
		unix.Close(fd)
		return -1, syscall.ESTALE
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case n.fd >= 0: // another request opened it meanwhile
		unix.Close(fd)
		n.refs++
		return n.fd, nil
	case n.dead:
		unix.Close(fd)
		return -1, syscall.ESTALE
	}
	if c.budget != nil {
		if err := c.budget.take(); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	n.fd, n.refs = fd, 1
	n.listed.Store(nil)
	return fd, nil
}

// relist records that a listed inode n (one without an fd yet) was just
// seen as name in dir, so that its first use opens it there: a hard link
// listed or looked up under another name since the first may be the name
// that is left when the guest uses it. It takes no lock (every warm
// lookup and listing entry passes here): the swap fails, leaving nothing
// to do, if n got its fd or was forgotten meanwhile.
func (c *fdCache) relist(n *inode, dir *inode, name string) {
	if l := n.listed.Load(); l != nil && (l.parent != dir || l.name != name) {
		n.listed.CompareAndSwap(l, &listedName{parent: dir, name: name})
	}
}

// release ends a use of the fd returned by acquire.
func (c *fdCache) release(n *inode) {
	c.mu.Lock()
	n.refs--
	if n.refs == 0 {
		if n.dead {
			c.closeLocked(n)
		} else if c.open > c.max {
			c.evictLocked()
		}
	}
	c.mu.Unlock()
}

// offer hands an O_PATH fd for n to the cache, which keeps or closes it.
func (c *fdCache) offer(n *inode, fd int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n.fd >= 0 || n.dead {
		unix.Close(fd)
		return
	}
	if n.handle == nil {
		// A listed inode looked up by name: pin the fd (intern checked
		// it is the same inode), as acquireListed would.
		if n.listed.Load() == nil || (c.budget != nil && c.budget.take() != nil) {
			unix.Close(fd)
			return
		}
		n.fd = fd
		n.listed.Store(nil)
		return
	}
	n.fd = fd
	n.elem = c.lru.PushFront(n)
	c.open++
	c.evictLocked()
}

// forget marks n dead and closes its fd once no operation uses it.
func (c *fdCache) forget(n *inode) {
	c.mu.Lock()
	n.dead = true
	n.listed.Store(nil) // lets go of the parent
	if n.refs == 0 {
		c.closeLocked(n)
	}
	c.mu.Unlock()
}

func (c *fdCache) closeLocked(n *inode) {
	if n.fd < 0 {
		return
	}
	unix.Close(n.fd)
	n.fd = -1
	if n.handle == nil && c.budget != nil {
		c.budget.give() // a pinned fd, counted at intern
	}
	if n.elem != nil {
		c.lru.Remove(n.elem)
		n.elem = nil
		c.open--
	}
}

func (c *fdCache) evictLocked() {
	for e := c.lru.Back(); e != nil && c.open > c.max; {
		prev := e.Prev()
		if n := e.Value.(*inode); n.refs == 0 {
			c.closeLocked(n)
		}
		e = prev
	}
}

// cached reports how many evictable fds are open (for tests and metrics).
func (c *fdCache) cached() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open
}
