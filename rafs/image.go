package rafs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
)

// RootIno is the inode number of the image's root directory, as FUSE
// expects it.
const RootIno = 1

// Options control how an image is opened and read.
type Options struct {
	// Backend serves the image's blobs. Nil means no blob data: metadata
	// operations work, file reads fail with EIO.
	Backend backend.Backend
	// Cache is the storage layer blob data goes through (the daemon's blob
	// cache, shared by its mounts). Nil: a private one without a cache
	// directory (every read goes to the backend), closed with the image.
	Cache *storage.Manager
	// DigestValidate checks every chunk read against its digest (v1
	// digest_validate, v2 rafs.validate). A mismatch fails that read with
	// EIO; the data is never served.
	DigestValidate bool
	// UID and GID are reported for every inode when the image lacks
	// EXPLICIT_UID_GID. Nil means the daemon's effective ids, as nydusd.
	UID, GID *uint32
	// RecordedOwners reports the uid/gid each inode records even when the
	// image lacks EXPLICIT_UID_GID (UID and GID are then unused). Builders
	// layering on an image want them, as nydus-image does; a daemon
	// serving the image does not.
	RecordedOwners bool
	// AllowPlainEROFS accepts EROFS images that are not RAFS (no RAFS v6
	// compat bit), such as mkfs.erofs output with chunk-based files.
	AllowPlainEROFS bool
	// ChunkCacheSize is how many decompressed chunks are kept in memory
	// (0: a small default; negative: none).
	ChunkCacheSize int
	// Log receives warnings (digest mismatches, ...). Nil: logrus standard.
	Log logrus.FieldLogger
}

// Inode is one decoded inode.
type Inode struct {
	Ino       uint64 // the stable inode number reported to FUSE
	Mode      uint32 // type and permission bits (syscall.S_IF*)
	UID, GID  uint32
	Nlink     uint32
	Size      uint64
	Blocks    uint64 // 512-byte units
	Mtime     uint64
	MtimeNsec uint32
	Rdev      uint32

	id     uint64 // v6 nid or v5 inode-table index
	rawIno uint64 // v6 i_ino or v5 i_ino
	v6     v6Inode
	v5     v5Inode
}

// IsDir and friends classify the inode.
func (n *Inode) IsDir() bool     { return n.Mode&syscall.S_IFMT == syscall.S_IFDIR }
func (n *Inode) IsRegular() bool { return n.Mode&syscall.S_IFMT == syscall.S_IFREG }
func (n *Inode) IsSymlink() bool { return n.Mode&syscall.S_IFMT == syscall.S_IFLNK }

// DirEntry is one directory entry.
type DirEntry struct {
	Name string
	Ino  uint64
	// Type is the file type in the S_IFMT bits.
	Type uint32
	// Off is the cookie after this entry (pass it back to resume).
	Off uint64
}

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// format is what the v5 and v6 decoders provide.
type format interface {
	version() int
	rootID() uint64
	inode(id uint64) (*Inode, error)
	// ino and idOf convert between ids and FUSE inode numbers.
	ino(n *Inode) uint64
	idOf(ino uint64) (uint64, error)
	lookup(dir *Inode, name string) (uint64, error)
	// readdir calls fn for the entries from cookie off on (off 0 is the
	// start); fn returns false to stop.
	readdir(dir *Inode, off uint64, fn func(name string, id uint64, dtype uint32, next uint64) bool) error
	readlink(n *Inode) ([]byte, error)
	xattrs(n *Inode) ([]Xattr, error)
	// chunks calls fn for each chunk of regular file n overlapping
	// [off, end), in file order.
	chunks(n *Inode, off, end uint64, fn func(c chunkRef) error) error
	// flatData returns the bytes of a regular file stored in the
	// bootstrap itself (plain EROFS), or nil if it is chunk based.
	flatData(n *Inode) ([]byte, bool, error)
	blobTable() []*blob
	superFlags() uint64
}

// Image is an open RAFS image. It is safe for concurrent use.
type Image struct {
	name   string
	data   []byte
	unmap  func() error
	opts   Options
	log    logrus.FieldLogger
	f      format
	blobs  []*blob
	codecs *codecs
	cache  *chunkCache
	store  *storage.Manager
	// ownStore is set when store is the image's private one.
	ownStore bool
	// ctx ends when the image is closed (stops its prefetch); Close waits
	// for the prefetch goroutines (they read the mapping) in bg.
	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup
	uid    uint32
	gid    uint32

	explicitIDs bool
	closed      atomic.Bool

	// logSecond and logCount rate-limit warnings a guest can trigger.
	logSecond atomic.Int64
	logCount  atomic.Int32
}

// logsPerSecond is how many guest-triggerable warnings are logged per second.
const logsPerSecond = 10

// logOK reports whether another guest-triggerable warning may be logged
// this second, so that a hostile guest cannot flood the log.
func (img *Image) logOK() bool {
	now := time.Now().Unix()
	if img.logSecond.Swap(now) != now {
		if n := img.logCount.Swap(0); n > logsPerSecond {
			img.log.Warnf("rafs: %d similar messages suppressed", n-logsPerSecond)
		}
	}
	return img.logCount.Add(1) <= logsPerSecond
}

// chunkSize is the image's chunk size (for sizing the chunk cache).
func (img *Image) chunkSize() uint64 {
	switch m := img.f.(type) {
	case *v5:
		return m.chunkSize
	case *v6:
		if m.chunkSize != 0 {
			return m.chunkSize
		}
	}
	return 1 << 20
}

// Open opens the bootstrap at path: a RAFS v5 or v6 bootstrap, or a blob
// that carries its bootstrap inline (found through its ToC). The file is
// mapped, not read: inodes are decoded on demand.
func Open(path string, opts Options) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open bootstrap: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat bootstrap: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("bootstrap %s is not a regular file", path)
	}
	if st.Size() == 0 {
		return nil, fmt.Errorf("bootstrap %s: %w: empty file", path, ErrFormat)
	}
	if st.Size() > maxBootstrapSize*2 {
		return nil, fmt.Errorf("bootstrap %s: %w: %d bytes is too large", path, ErrFormat, st.Size())
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap bootstrap %s: %w", path, err)
	}
	unmap := func() error { return unix.Munmap(data) }
	img, err := open(data, path, opts)
	if err != nil {
		unmap()
		return nil, fmt.Errorf("bootstrap %s: %w", path, err)
	}
	if &img.data[0] == &data[0] {
		img.unmap = unmap
	} else {
		unmap() // the bootstrap was extracted from a blob into memory
	}
	return img, nil
}

// OpenBytes opens an image held in memory. name is the file name the
// bytes came from (used only for the inline-bootstrap blob id quirk).
func OpenBytes(data []byte, name string, opts Options) (*Image, error) {
	return open(data, name, opts)
}

func open(data []byte, name string, opts Options) (*Image, error) {
	img := &Image{name: name, opts: opts, log: opts.Log}
	if img.log == nil {
		img.log = logrus.StandardLogger()
	}
	var err error
	if img.codecs, err = newCodecs(); err != nil {
		return nil, err
	}
	fail := func(err error) (*Image, error) {
		img.codecs.close()
		return nil, err
	}
	inline := false
	if !isV5(data) && !isV6(data) {
		boot, err := img.extractInlineBootstrap(data)
		if err != nil {
			return fail(err)
		}
		data, inline = boot, true
	}
	img.data = data
	switch {
	case isV5(data):
		img.f, err = openV5(data)
	case isV6(data):
		img.f, err = openV6(data, opts.AllowPlainEROFS)
	}
	if err != nil {
		return fail(err)
	}
	flags := img.f.superFlags()
	img.explicitIDs = flags&flagExplicitUIDGID != 0 || opts.RecordedOwners
	img.uid, img.gid = uint32(os.Geteuid()), uint32(os.Getegid())
	if opts.UID != nil {
		img.uid = *opts.UID
	}
	if opts.GID != nil {
		img.gid = *opts.GID
	}
	img.blobs = img.f.blobTable()
	for _, b := range img.blobs {
		b.img = img
	}
	stem := filepath.Base(name)
	if i := strings.IndexByte(stem, '.'); i >= 0 {
		stem = stem[:i]
	}
	for _, b := range img.blobs {
		// The inline-bootstrap quirk: such a blob is named by the file
		// the bootstrap came from.
		if b.features&blobInlinedFSMeta != 0 && b.features&(blobSeparate|blobExternal) == 0 && stem != "" {
			b.id = stem
		} else if inline && b.features&blobCapTarTOC == 0 && stem != "" {
			b.id = stem
		}
	}
	cacheSize := opts.ChunkCacheSize
	if cacheSize == 0 {
		// About 32 MiB of decompressed chunks, whatever the chunk size.
		cacheSize = int(min(max((32<<20)/img.chunkSize(), 2), 32))
	}
	img.cache = newChunkCache(cacheSize)
	img.store = opts.Cache
	if img.store == nil {
		if img.store, err = storage.NewManager(storage.Options{Log: img.log}); err != nil {
			return fail(err)
		}
		img.ownStore = true
	}
	img.ctx, img.cancel = context.WithCancel(context.Background())
	return img, nil
}

// Close releases the image and its open blobs.
func (img *Image) Close() error {
	if img.closed.Swap(true) {
		return nil
	}
	img.cancel()
	img.bg.Wait()
	var errs []error
	for _, b := range img.blobs {
		errs = append(errs, b.close())
	}
	if img.ownStore {
		errs = append(errs, img.store.Close())
	}
	img.codecs.close()
	if img.unmap != nil {
		errs = append(errs, img.unmap())
	}
	return errors.Join(errs...)
}

// Version is 5 or 6.
func (img *Image) Version() int { return img.f.version() }

// BlobIDs lists the image's blob ids in blob-table order.
func (img *Image) BlobIDs() []string {
	ids := make([]string, len(img.blobs))
	for i, b := range img.blobs {
		ids[i] = b.id
	}
	return ids
}

// HasXattr reports whether the image says some inode has xattrs.
func (img *Image) HasXattr() bool { return img.f.superFlags()&flagHasXattr != 0 }

// BootstrapSize is the size of the (possibly extracted) bootstrap.
func (img *Image) BootstrapSize() int { return len(img.data) }

func (img *Image) fill(n *Inode) *Inode {
	n.Ino = img.f.ino(n)
	if !img.explicitIDs {
		n.UID, n.GID = img.uid, img.gid
	}
	return n
}

// Inode returns the inode with FUSE number ino.
func (img *Image) Inode(ino uint64) (*Inode, error) {
	id, err := img.f.idOf(ino)
	if err != nil {
		return nil, err
	}
	n, err := img.f.inode(id)
	if err != nil {
		return nil, err
	}
	return img.fill(n), nil
}

// Lookup finds name in directory dir. A missing name is syscall.ENOENT.
func (img *Image) Lookup(dir uint64, name string) (*Inode, error) {
	d, err := img.Inode(dir)
	if err != nil {
		return nil, err
	}
	if !d.IsDir() {
		return nil, syscall.ENOTDIR
	}
	if name == "" || len(name) > 255 || strings.IndexByte(name, '/') >= 0 {
		return nil, syscall.ENOENT
	}
	id, err := img.f.lookup(d, name)
	if err != nil {
		return nil, err
	}
	n, err := img.f.inode(id)
	if err != nil {
		return nil, err
	}
	return img.fill(n), nil
}

// ReadDir calls fn for the entries of directory dir from cookie off on
// (0: from the start; "." and ".." are included) until fn returns false.
func (img *Image) ReadDir(dir uint64, off uint64, fn func(DirEntry) bool) error {
	d, err := img.Inode(dir)
	if err != nil {
		return err
	}
	if !d.IsDir() {
		return syscall.ENOTDIR
	}
	var ierr error
	err = img.f.readdir(d, off, func(name string, id uint64, dtype uint32, next uint64) bool {
		ino := uint64(0)
		if name == "." {
			ino = d.Ino
		} else {
			n, err := img.f.inode(id)
			if err != nil {
				ierr = err
				return false
			}
			ino = img.f.ino(n)
			if name != ".." {
				dtype = n.Mode & syscall.S_IFMT
			}
		}
		return fn(DirEntry{Name: name, Ino: ino, Type: dtype, Off: next})
	})
	if err != nil {
		return err
	}
	return ierr
}

// Readlink returns a symlink's target.
func (img *Image) Readlink(ino uint64) ([]byte, error) {
	n, err := img.Inode(ino)
	if err != nil {
		return nil, err
	}
	if !n.IsSymlink() {
		return nil, syscall.EINVAL
	}
	return img.f.readlink(n)
}

// Xattrs returns an inode's extended attributes.
func (img *Image) Xattrs(ino uint64) ([]Xattr, error) {
	n, err := img.Inode(ino)
	if err != nil {
		return nil, err
	}
	return img.f.xattrs(n)
}

// ReadAt reads file ino at off into p, returning the bytes read (short
// only at the end of the file: then io.EOF).
func (img *Image) ReadAt(ctx context.Context, ino uint64, p []byte, off int64) (int, error) {
	n, err := img.Inode(ino)
	if err != nil {
		return 0, err
	}
	got, err := img.readInto(ctx, n, p, off)
	if err == nil && got < len(p) {
		err = io.EOF
	}
	return got, err
}

// inodeCount is the image's inode count, for statfs.
func (img *Image) inodeCount() uint64 {
	switch m := img.f.(type) {
	case *v5:
		return m.count
	case *v6:
		return m.inos
	}
	return 0
}

// Prefetch returns the inode numbers the image's prefetch table lists (v5
// inode numbers, v6 nids mapped to FUSE inode numbers), in table order.
func (img *Image) Prefetch() []uint64 {
	var raw []uint32
	switch m := img.f.(type) {
	case *v5:
		raw = m.prefetch
	case *v6:
		raw = m.prefetch
	}
	var out []uint64
	for _, id := range raw {
		n, err := img.f.inode(uint64(id))
		if err != nil {
			continue
		}
		out = append(out, img.f.ino(n))
	}
	return out
}
