package rafs

import (
	"context"
	"errors"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/fsapi"
)

// DefaultTimeout is the entry and attr timeout: images are immutable, so
// the kernel may keep what it learns for good (nydusd uses 2^32 s).
const DefaultTimeout = (1 << 32) * time.Second

// FSOptions tune the filesystem.
type FSOptions struct {
	// EntryTimeout and AttrTimeout default to DefaultTimeout.
	EntryTimeout, AttrTimeout time.Duration
	// DisableZeroCopy turns off fusewire segment results (fd + offset
	// ranges) for reads of uncompressed local chunk data; the bytes are
	// then copied into the reply.
	DisableZeroCopy bool
}

var _ fsapi.ContextReader = (*FS)(nil)

// FS is a read-only fuse.RawFileSystem over an Image. It keeps no state
// per inode or per open file: every answer is decoded from the image.
type FS struct {
	ReadOnly // every operation that would change the image answers EROFS
	img      *Image
	opts     FSOptions
}

// NewFS returns the filesystem over img. The caller keeps ownership of img.
func NewFS(img *Image, opts FSOptions) *FS {
	if opts.EntryTimeout == 0 {
		opts.EntryTimeout = DefaultTimeout
	}
	if opts.AttrTimeout == 0 {
		opts.AttrTimeout = DefaultTimeout
	}
	return &FS{ReadOnly: NewReadOnly(), img: img, opts: opts}
}

// Image returns the image the filesystem serves.
func (fs *FS) Image() *Image { return fs.img }

func (fs *FS) String() string { return "rafs" }

// status maps an error to a FUSE status: errnos pass through, anything
// else (a malformed image, a failed blob read, a digest mismatch) is EIO.
func (fs *FS) status(op string, ino uint64, err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fuse.Status(errno)
	}
	if errors.Is(err, ErrDigest) {
		return fuse.EIO // logged where it was found
	}
	if fs.img.logOK() {
		fs.img.log.WithField("op", op).WithField("ino", ino).Warnf("rafs: %v", err)
	}
	return fuse.EIO
}

func (fs *FS) fillAttr(n *Inode, a *fuse.Attr) {
	*a = fuse.Attr{
		Ino:     n.Ino,
		Size:    n.Size,
		Blocks:  n.Blocks,
		Mtime:   n.Mtime,
		Ctime:   n.Mtime,
		Atime:   n.Mtime,
		Mode:    n.Mode,
		Nlink:   n.Nlink,
		Rdev:    n.Rdev,
		Blksize: 4096,
	}
	a.Mtimensec, a.Ctimensec, a.Atimensec = n.MtimeNsec, n.MtimeNsec, n.MtimeNsec
	a.Owner = fuse.Owner{Uid: n.UID, Gid: n.GID}
}

func (fs *FS) fillEntry(n *Inode, out *fuse.EntryOut) {
	out.NodeId = n.Ino
	out.Generation = 1
	out.SetEntryTimeout(fs.opts.EntryTimeout)
	out.SetAttrTimeout(fs.opts.AttrTimeout)
	fs.fillAttr(n, &out.Attr)
}

func (fs *FS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	n, err := fs.img.Lookup(h.NodeId, name)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			// A negative entry (node id 0 with OK) that the kernel may
			// cache as long as a positive one: the image never changes.
			*out = fuse.EntryOut{}
			out.SetEntryTimeout(fs.opts.EntryTimeout)
			return fuse.OK
		}
		return fs.status("lookup", h.NodeId, err)
	}
	fs.fillEntry(n, out)
	return fuse.OK
}

// Forget is a no-op: inodes carry no state.
func (fs *FS) Forget(nodeid, nlookup uint64) {}

func (fs *FS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	n, err := fs.img.Inode(in.NodeId)
	if err != nil {
		return fs.status("getattr", in.NodeId, err)
	}
	fs.fillAttr(n, &out.Attr)
	out.SetTimeout(fs.opts.AttrTimeout)
	return fuse.OK
}

func (fs *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	n, err := fs.img.Inode(in.NodeId)
	if err != nil {
		return fs.status("open", in.NodeId, err)
	}
	if n.IsDir() {
		return fuse.Status(syscall.EISDIR)
	}
	if in.Flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND|syscall.O_CREAT) != 0 {
		return fuse.EROFS
	}
	// NOFLUSH: a close has nothing to flush in a read-only image, so the
	// guest need not send FLUSH (Linux 5.16 and later honour it).
	out.OpenFlags = fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH
	return fuse.OK
}

func (fs *FS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	return fs.ReadContext(fsapi.CancelContext(cancel), in, buf)
}

// ReadContext is Read with the FUSE request's context (fsapi.ContextReader),
// which reaches the storage layer and the backend.
func (fs *FS) ReadContext(ctx context.Context, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	n, err := fs.img.Inode(in.NodeId)
	if err != nil {
		return nil, fs.status("read", in.NodeId, err)
	}
	size := in.Size
	if uint32(len(buf)) < size {
		// The kernel never asks for more than max_read; a forged request
		// gets at most maxReadAlloc bytes (a short read) instead of an
		// allocation of its choosing.
		size = min(size, maxReadAlloc)
		if uint32(len(buf)) < size {
			buf = make([]byte, size)
		}
	}
	buf = buf[:size]
	segs, got, err := fs.img.readFile(ctx, n, buf, in.Offset, !fs.opts.DisableZeroCopy)
	if err != nil {
		return nil, fs.status("read", in.NodeId, err)
	}
	if segs != nil {
		return fsapi.SegmentsResult(segs), fuse.OK
	}
	return fuse.ReadResultData(buf[:got]), fuse.OK
}

func (fs *FS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {}

func (fs *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	n, err := fs.img.Inode(in.NodeId)
	if err != nil {
		return fs.status("opendir", in.NodeId, err)
	}
	if !n.IsDir() {
		return fuse.ENOTDIR
	}
	out.OpenFlags = fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_CACHE_DIR
	return fuse.OK
}

func (fs *FS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	err := fs.img.ReadDir(in.NodeId, in.Offset, func(e DirEntry) bool {
		return out.AddDirEntry(fuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: e.Type, Off: e.Off})
	})
	return fs.status("readdir", in.NodeId, err)
}

func (fs *FS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	var ierr error
	err := fs.img.ReadDir(in.NodeId, in.Offset, func(e DirEntry) bool {
		eo := out.AddDirLookupEntry(fuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: e.Type, Off: e.Off})
		if eo == nil {
			return false
		}
		if e.Name == "." || e.Name == ".." {
			return true // the kernel takes no reference on these
		}
		n, err := fs.img.Inode(e.Ino)
		if err != nil {
			ierr = err
			return false
		}
		fs.fillEntry(n, eo)
		return true
	})
	if err == nil {
		err = ierr
	}
	return fs.status("readdirplus", in.NodeId, err)
}

func (fs *FS) ReleaseDir(in *fuse.ReleaseIn) {}

func (fs *FS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	t, err := fs.img.Readlink(h.NodeId)
	if err != nil {
		return nil, fs.status("readlink", h.NodeId, err)
	}
	return t, fuse.OK
}

func (fs *FS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	xs, err := fs.img.Xattrs(h.NodeId)
	if err != nil {
		return 0, fs.status("getxattr", h.NodeId, err)
	}
	for _, x := range xs {
		if x.Name == attr {
			if len(dest) < len(x.Value) {
				return uint32(len(x.Value)), fuse.ERANGE
			}
			return uint32(copy(dest, x.Value)), fuse.OK
		}
	}
	return 0, fuse.ENOATTR
}

func (fs *FS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	xs, err := fs.img.Xattrs(h.NodeId)
	if err != nil {
		return 0, fs.status("listxattr", h.NodeId, err)
	}
	var list []byte
	for _, x := range xs {
		list = append(append(list, x.Name...), 0)
	}
	if len(dest) < len(list) {
		return uint32(len(list)), fuse.ERANGE
	}
	return uint32(copy(dest, list)), fuse.OK
}

func (fs *FS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	var blocks uint64
	for _, b := range fs.img.blobs {
		blocks += b.uncompSize / 4096
	}
	blocks += uint64(len(fs.img.data)) / 4096
	*out = fuse.StatfsOut{Blocks: blocks, Bsize: 4096, Frsize: 4096, NameLen: 255, Files: fs.img.inodeCount()}
	return fuse.OK
}

func (fs *FS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	n, err := fs.img.Inode(in.NodeId)
	if err != nil {
		return fs.status("access", in.NodeId, err)
	}
	if in.Mask&unixWOK != 0 {
		return fuse.EROFS
	}
	if in.Uid == 0 {
		if in.Mask&unixXOK != 0 && !n.IsDir() && n.Mode&0o111 == 0 {
			return fuse.EACCES
		}
		return fuse.OK
	}
	perm := n.Mode & 0o7
	switch {
	case in.Uid == n.UID:
		perm = (n.Mode >> 6) & 0o7
	case in.Gid == n.GID:
		perm = (n.Mode >> 3) & 0o7
	}
	if in.Mask&^perm&0o7 != 0 {
		return fuse.EACCES
	}
	return fuse.OK
}

// maxReadAlloc bounds the buffer Read allocates when the caller's is too small.
const maxReadAlloc = 1 << 20

const (
	unixWOK = 2
	unixXOK = 1
)
