package vfs

import (
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
)

const (
	// IndexShift is where the mount index sits in a node id (nydusd's
	// VFS_INDEX_SHIFT).
	IndexShift = 56
	// MaxMounts is how many filesystems can be mounted at once.
	MaxMounts = 255

	idMask = 1<<IndexShift - 1
)

// Errors of Mount, Umount and Remount; each also matches a syscall errno
// with errors.Is.
var (
	ErrExist    = fmt.Errorf("mountpoint is occupied: %w", syscall.EEXIST)
	ErrNotFound = fmt.Errorf("no filesystem is mounted there: %w", syscall.ENOENT)
	ErrNested   = fmt.Errorf("mountpoint is inside a mounted filesystem: %w", syscall.EBUSY)
	ErrFull     = fmt.Errorf("%d filesystems are mounted already: %w", MaxMounts, syscall.ENOSPC)
	ErrPath     = fmt.Errorf("mountpoint must be an absolute path: %w", syscall.EINVAL)
)

// Mount is a filesystem to mount, with what the API reports about it.
type Mount struct {
	FS fuse.RawFileSystem
	// Type is reported as backend_type by the API ("Rafs", "PassthroughFs").
	Type string
	// Config is reported as config by the API (any JSON-able value).
	Config any
	// Close releases the filesystem once it is unmounted and the last
	// request on it is done. Nil closes FS if it is an io.Closer.
	Close func() error
}

// MountInfo describes a mounted filesystem.
type MountInfo struct {
	Path        string
	Type        string
	Config      any
	MountedTime time.Time
	Index       int
}

// mount is one mounted filesystem. refs counts the table's reference
// (dropped by umount) and every request in progress; at zero it closes.
type mount struct {
	Mount
	path  string
	index int
	base  uint64 // index << IndexShift
	root  bool   // mounted at "/": answers for node id 1
	time  time.Time
	refs  atomic.Int64
	log   logrus.FieldLogger
}

func (m *mount) acquire() bool {
	for {
		r := m.refs.Load()
		if r <= 0 {
			return false
		}
		if m.refs.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

func (m *mount) release() {
	if m.refs.Add(-1) != 0 {
		return
	}
	var err error
	if m.Close != nil {
		err = m.Close()
	} else if c, ok := m.FS.(io.Closer); ok {
		err = c.Close()
	}
	if err != nil {
		m.log.WithField("mountpoint", m.path).Warnf("vfs: close unmounted filesystem: %v", err)
	}
}

// guest turns the filesystem's node id into the guest's; ok is false when
// the id does not fit below the index byte.
func (m *mount) guest(id uint64) (uint64, bool) {
	if id == 0 {
		return 0, true
	}
	if m.root && id == fuse.FUSE_ROOT_ID {
		return id, true
	}
	if id > idMask {
		return 0, false
	}
	return m.base | id, true
}

// inner turns a guest node id routed to m into the filesystem's (the
// inverse of guest).
func (m *mount) inner(guest uint64) uint64 {
	if m.root && guest == fuse.FUSE_ROOT_ID {
		return guest
	}
	return guest & idMask
}

// fixIno namespaces an st_ino, except for a mount at "/" (the only mount
// there is then).
func (m *mount) fixIno(ino uint64) uint64 {
	if m.root || ino > idMask {
		return ino
	}
	return m.base | ino
}

// pnode is a synthetic directory of the pseudo filesystem. Nodes are
// immutable once their table is published.
type pnode struct {
	ino      uint64
	parent   uint64
	name     string
	children map[string]*pnode
	names    []string // sorted children, for READDIR offsets
	mnt      *mount   // mounted here (then children is empty)
}

// table is one immutable snapshot of the mount table.
type table struct {
	mounts [MaxMounts + 1]*mount
	pseudo map[uint64]*pnode
	root   *mount // mounted at "/"
}

func (t *table) clone() *table {
	n := &table{mounts: t.mounts, root: t.root, pseudo: make(map[uint64]*pnode, len(t.pseudo))}
	for ino, p := range t.pseudo {
		c := *p
		c.children = make(map[string]*pnode, len(p.children))
		n.pseudo[ino] = &c
	}
	for _, p := range n.pseudo {
		for _, name := range p.names {
			p.children[name] = n.pseudo[t.pseudo[p.ino].children[name].ino]
		}
	}
	return n
}

func (p *pnode) setChildren() {
	p.names = p.names[:0:0]
	for name := range p.children {
		p.names = append(p.names, name)
	}
	sort.Strings(p.names)
}

// Options configure the mount table.
type Options struct {
	// EntryTimeout is how long the guest may cache the pseudo root's
	// directories and the entries of mount points (default 1 s: an
	// unmounted path disappears within it; 0 is allowed with NoCache).
	EntryTimeout time.Duration
	// NoCache makes EntryTimeout 0.
	NoCache bool
	// Logger receives warnings; nil logs to logrus' standard logger.
	Logger logrus.FieldLogger
}

// VFS is the mount table. It is a fuse.RawFileSystem; its zero value is
// not usable: call New.
type VFS struct {
	fuse.RawFileSystem
	opts    Options
	log     logrus.FieldLogger
	created time.Time

	tab atomic.Pointer[table]

	mu        sync.Mutex // serialises Mount, Umount, Remount
	nextIndex int
	nextIno   uint64

	server atomic.Pointer[fuse.Server]
	reads  sync.Pool // *heldRead
}

// New returns an empty mount table: a pseudo root directory alone.
func New(opts Options) *VFS {
	if opts.NoCache {
		opts.EntryTimeout = 0
	} else if opts.EntryTimeout == 0 {
		opts.EntryTimeout = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = logrus.StandardLogger()
	}
	v := &VFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), opts: opts, log: opts.Logger,
		created: time.Now(), nextIndex: 1, nextIno: fuse.FUSE_ROOT_ID + 1}
	root := &pnode{ino: fuse.FUSE_ROOT_ID, parent: fuse.FUSE_ROOT_ID, children: map[string]*pnode{}}
	v.tab.Store(&table{pseudo: map[uint64]*pnode{root.ino: root}})
	v.reads.New = func() any { return &heldRead{} }
	return v
}

func (v *VFS) String() string { return "vfs" }

// cleanPath checks and cleans a mountpoint; it returns its components
// (none for "/").
func cleanPath(p string) (string, []string, error) {
	if !strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) {
		return "", nil, fmt.Errorf("%q: %w", p, ErrPath)
	}
	p = path.Clean(p)
	if p == "/" {
		return p, nil, nil
	}
	parts := strings.Split(p[1:], "/")
	for _, c := range parts {
		if len(c) > 255 {
			return "", nil, fmt.Errorf("%q: component longer than 255 bytes: %w", p, ErrPath)
		}
	}
	return p, parts, nil
}

func (v *VFS) newMount(p string, mt Mount, index int, root bool) *mount {
	m := &mount{Mount: mt, path: p, index: index, base: uint64(index) << IndexShift, root: root,
		time: time.Now(), log: v.log}
	m.refs.Store(1)
	if s := v.server.Load(); s != nil {
		mt.FS.Init(s)
	}
	return m
}

func (v *VFS) allocIndex(t *table) (int, error) {
	for i := 0; i < MaxMounts; i++ {
		idx := (v.nextIndex-1+i)%MaxMounts + 1
		if t.mounts[idx] == nil {
			v.nextIndex = idx%MaxMounts + 1
			return idx, nil
		}
	}
	return 0, ErrFull
}

// Mount mounts mt.FS at path p: "/" (then nothing else can be mounted) or
// a path whose missing directories are made in the pseudo filesystem.
// Mounting on an occupied path (a mount, or a directory with mounts
// beneath) fails with ErrExist; inside a mounted filesystem, ErrNested.
func (v *VFS) Mount(p string, mt Mount) error {
	if mt.FS == nil {
		return fmt.Errorf("vfs: mount %s: no filesystem", p)
	}
	p, parts, err := cleanPath(p)
	if err != nil {
		return fmt.Errorf("vfs: mount: %w", err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	old := v.tab.Load()
	if old.root != nil {
		if p == "/" {
			return fmt.Errorf("vfs: mount /: %w", ErrExist)
		}
		return fmt.Errorf("vfs: mount %s: %w", p, ErrNested)
	}
	t := old.clone()
	idx, err := v.allocIndex(t)
	if err != nil {
		return fmt.Errorf("vfs: mount %s: %w", p, err)
	}
	dir := t.pseudo[fuse.FUSE_ROOT_ID]
	if p == "/" {
		if len(dir.children) > 0 {
			return fmt.Errorf("vfs: mount /: %w", ErrExist)
		}
		m := v.newMount(p, mt, idx, true)
		t.root, t.mounts[idx] = m, m
		v.tab.Store(t)
		return nil
	}
	for i, name := range parts {
		c := dir.children[name]
		last := i == len(parts)-1
		switch {
		case c != nil && c.mnt != nil && last:
			return fmt.Errorf("vfs: mount %s: %w", p, ErrExist)
		case c != nil && c.mnt != nil:
			return fmt.Errorf("vfs: mount %s: %w", p, ErrNested)
		case c != nil && last && len(c.children) > 0:
			return fmt.Errorf("vfs: mount %s: %w (filesystems are mounted beneath)", p, ErrExist)
		case c == nil:
			c = &pnode{ino: v.nextIno, parent: dir.ino, name: name, children: map[string]*pnode{}}
			v.nextIno++
			t.pseudo[c.ino] = c
			dir.children[name] = c
			dir.setChildren()
		}
		dir = c
	}
	m := v.newMount(p, mt, idx, false)
	dir.mnt = m
	t.mounts[idx] = m
	v.tab.Store(t)
	return nil
}

// find returns the pseudo node at a cleaned path's components, or nil.
func (t *table) find(parts []string) *pnode {
	dir := t.pseudo[fuse.FUSE_ROOT_ID]
	for _, name := range parts {
		if dir = dir.children[name]; dir == nil {
			return nil
		}
	}
	return dir
}

// Umount unmounts the filesystem at p. Requests in progress on it finish;
// it is closed after the last. Directories of the pseudo filesystem left
// empty go with it.
func (v *VFS) Umount(p string) error {
	p, parts, err := cleanPath(p)
	if err != nil {
		return fmt.Errorf("vfs: umount: %w", err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	t := v.tab.Load().clone()
	var m *mount
	if p == "/" {
		if m = t.root; m == nil {
			return fmt.Errorf("vfs: umount /: %w", ErrNotFound)
		}
		t.root = nil
	} else {
		n := t.find(parts)
		if n == nil || n.mnt == nil {
			return fmt.Errorf("vfs: umount %s: %w", p, ErrNotFound)
		}
		m, n.mnt = n.mnt, nil
		for n.ino != fuse.FUSE_ROOT_ID && n.mnt == nil && len(n.children) == 0 {
			parent := t.pseudo[n.parent]
			delete(parent.children, n.name)
			parent.setChildren()
			delete(t.pseudo, n.ino)
			n = parent
		}
	}
	t.mounts[m.index] = nil
	v.tab.Store(t)
	m.release()
	return nil
}

// Remount replaces the filesystem mounted at p with mt, keeping its index
// (so the guest's node ids carry over, as nydusd's RAFS remount).
func (v *VFS) Remount(p string, mt Mount) error {
	if mt.FS == nil {
		return fmt.Errorf("vfs: remount %s: no filesystem", p)
	}
	p, parts, err := cleanPath(p)
	if err != nil {
		return fmt.Errorf("vfs: remount: %w", err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	t := v.tab.Load().clone()
	var old *mount
	if p == "/" {
		old = t.root
	} else if n := t.find(parts); n != nil {
		old = n.mnt
	}
	if old == nil {
		return fmt.Errorf("vfs: remount %s: %w", p, ErrNotFound)
	}
	m := v.newMount(p, mt, old.index, old.root)
	if old.root {
		t.root = m
	} else {
		t.find(parts).mnt = m
	}
	t.mounts[m.index] = m
	v.tab.Store(t)
	old.release()
	return nil
}

// Info returns what is mounted at p.
func (v *VFS) Info(p string) (MountInfo, error) {
	p, parts, err := cleanPath(p)
	if err != nil {
		return MountInfo{}, fmt.Errorf("vfs: %w", err)
	}
	t := v.tab.Load()
	var m *mount
	if p == "/" {
		m = t.root
	} else if n := t.find(parts); n != nil {
		m = n.mnt
	}
	if m == nil {
		return MountInfo{}, fmt.Errorf("vfs: %s: %w", p, ErrNotFound)
	}
	return m.info(), nil
}

func (m *mount) info() MountInfo {
	return MountInfo{Path: m.path, Type: m.Type, Config: m.Config, MountedTime: m.time, Index: m.index}
}

// Mounts lists the mounted filesystems by path.
func (v *VFS) Mounts() []MountInfo {
	t := v.tab.Load()
	var out []MountInfo
	for _, m := range t.mounts {
		if m != nil {
			out = append(out, m.info())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// FS returns the filesystem mounted at p (for tests and metrics).
func (v *VFS) FS(p string) (fuse.RawFileSystem, error) {
	_, parts, err := cleanPath(p)
	if err != nil {
		return nil, fmt.Errorf("vfs: %w", err)
	}
	t := v.tab.Load()
	var m *mount
	if len(parts) == 0 {
		m = t.root
	} else if n := t.find(parts); n != nil {
		m = n.mnt
	}
	if m == nil {
		return nil, fmt.Errorf("vfs: %s: %w", p, ErrNotFound)
	}
	return m.FS, nil
}

// Close unmounts everything.
func (v *VFS) Close() error {
	var errs []error
	for _, m := range v.Mounts() {
		if err := v.Umount(m.Path); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
