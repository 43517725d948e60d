package vfs

import (
	"context"
	"encoding/binary"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/fsapi"
)

var (
	_ fuse.RawFileSystem  = (*VFS)(nil)
	_ fsapi.SyncFSer      = (*VFS)(nil)
	_ fsapi.ContextReader = (*VFS)(nil)
)

// route finds where a guest node id lives: a pseudo directory, or a mount
// (then acquired: the caller releases it).
func (v *VFS) route(id uint64) (*pnode, *mount) {
	t := v.tab.Load()
	idx := id >> IndexShift
	if idx == 0 {
		if id == fuse.FUSE_ROOT_ID && t.root != nil {
			if t.root.acquire() {
				return nil, t.root
			}
			return nil, nil
		}
		return t.pseudo[id], nil
	}
	m := t.mounts[idx]
	if m == nil || !m.acquire() {
		return nil, nil
	}
	return nil, m
}

// enter routes a request by its header, rewriting the node id to the
// mounted filesystem's; leave undoes that and drops the reference.
func (v *VFS) enter(h *fuse.InHeader) (*pnode, *mount, uint64) {
	orig := h.NodeId
	p, m := v.route(orig)
	if m != nil {
		h.NodeId = m.inner(orig)
	}
	return p, m, orig
}

func (m *mount) leave(h *fuse.InHeader, orig uint64) {
	h.NodeId = orig
	m.release()
}

// onMount runs op on the mount a request's node lives in, with the node id
// rewritten for the mounted filesystem (and restored, and the mount
// released, when op returns or panics). A pseudo directory is answered
// with pseudo, a node whose mount went away with ENOENT. Every operation
// without a pseudo-directory answer of its own goes through it.
func (v *VFS) onMount(h *fuse.InHeader, pseudo fuse.Status, op func(m *mount) fuse.Status) fuse.Status {
	p, m, orig := v.enter(h)
	if m == nil {
		return pseudoErr(p, pseudo)
	}
	defer m.leave(h, orig)
	return op(m)
}

// onMountN is onMount for operations that also return a value.
func onMountN[T any](v *VFS, h *fuse.InHeader, pseudo fuse.Status, op func(m *mount) (T, fuse.Status)) (T, fuse.Status) {
	p, m, orig := v.enter(h)
	if m == nil {
		var zero T
		return zero, pseudoErr(p, pseudo)
	}
	defer m.leave(h, orig)
	return op(m)
}

// gone is the answer for a node that is neither a pseudo directory nor in
// a mounted filesystem (its mount went away).
const gone = fuse.ENOENT

// fixEntry namespaces a reply's node id and st_ino.
func (m *mount) fixEntry(out *fuse.EntryOut, st fuse.Status) fuse.Status {
	if !st.Ok() {
		return st
	}
	if out.NodeId != 0 {
		id, ok := m.guest(out.NodeId)
		if !ok {
			m.log.WithField("mountpoint", m.path).Warnf("vfs: node id %#x does not fit below the mount index", out.NodeId)
			m.FS.Forget(out.NodeId, 1)
			*out = fuse.EntryOut{}
			return fuse.EIO
		}
		out.NodeId = id
	}
	out.Ino = m.fixIno(out.Ino)
	return st
}

func (v *VFS) pseudoAttr(p *pnode, a *fuse.Attr) {
	t := uint64(v.created.Unix())
	*a = fuse.Attr{Ino: p.ino, Mode: syscall.S_IFDIR | 0o755, Nlink: 2 + uint32(len(p.children)),
		Size: 4096, Blocks: 8, Blksize: 4096, Atime: t, Mtime: t, Ctime: t}
}

func (v *VFS) pseudoEntry(p *pnode, out *fuse.EntryOut) {
	*out = fuse.EntryOut{NodeId: p.ino}
	v.pseudoAttr(p, &out.Attr)
	out.SetEntryTimeout(v.opts.EntryTimeout)
	out.SetAttrTimeout(v.opts.EntryTimeout)
}

// mountRoot answers a lookup that crosses from the pseudo filesystem into
// a mount with the mounted filesystem's root. The filesystem is asked for
// its root's attributes only: a root is never forgotten (FORGETs of it are
// passed on and ignored, as for the root of a filesystem served alone).
func (v *VFS) mountRoot(cancel <-chan struct{}, m *mount, out *fuse.EntryOut) fuse.Status {
	if !m.acquire() {
		return gone
	}
	defer m.release()
	var a fuse.AttrOut
	in := fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: fuse.FUSE_ROOT_ID}}
	if st := m.FS.GetAttr(cancel, &in, &a); !st.Ok() {
		return st
	}
	*out = fuse.EntryOut{NodeId: m.base | fuse.FUSE_ROOT_ID, Attr: a.Attr,
		AttrValid: a.AttrValid, AttrValidNsec: a.AttrValidNsec}
	out.Ino = m.fixIno(out.Ino)
	out.SetEntryTimeout(v.opts.EntryTimeout)
	return fuse.OK
}

func (v *VFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	p, m, orig := v.enter(h)
	if m == nil {
		if p == nil {
			return gone
		}
		c := p.children[name]
		switch {
		case c == nil:
			return fuse.ENOENT
		case c.mnt != nil:
			return v.mountRoot(cancel, c.mnt, out)
		}
		v.pseudoEntry(c, out)
		return fuse.OK
	}
	defer m.leave(h, orig)
	return m.fixEntry(out, m.FS.Lookup(cancel, h, name, out))
}

func (v *VFS) Forget(nodeid, nlookup uint64) {
	if _, m := v.route(nodeid); m != nil {
		m.FS.Forget(m.inner(nodeid), nlookup)
		m.release()
	}
}

func (v *VFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	p, m, orig := v.enter(&in.InHeader)
	if m == nil {
		if p == nil {
			return gone
		}
		v.pseudoAttr(p, &out.Attr)
		out.SetTimeout(v.opts.EntryTimeout)
		return fuse.OK
	}
	defer m.leave(&in.InHeader, orig)
	st := m.FS.GetAttr(cancel, in, out)
	out.Ino = m.fixIno(out.Ino)
	return st
}

func (v *VFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	return v.onMount(&in.InHeader, fuse.EROFS, func(m *mount) fuse.Status {
		st := m.FS.SetAttr(cancel, in, out)
		out.Ino = m.fixIno(out.Ino)
		return st
	})
}

// pseudoErr is the answer for a pseudo directory (st), or for a gone node.
func pseudoErr(p *pnode, st fuse.Status) fuse.Status {
	if p == nil {
		return gone
	}
	return st
}

func (v *VFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return v.onMount(&in.InHeader, fuse.EROFS, func(m *mount) fuse.Status { return m.fixEntry(out, m.FS.Mknod(cancel, in, name, out)) })
}

func (v *VFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return v.onMount(&in.InHeader, fuse.EROFS, func(m *mount) fuse.Status { return m.fixEntry(out, m.FS.Mkdir(cancel, in, name, out)) })
}

func (v *VFS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return v.onMount(h, fuse.EROFS, func(m *mount) fuse.Status { return m.FS.Unlink(cancel, h, name) })
}

func (v *VFS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return v.onMount(h, fuse.EROFS, func(m *mount) fuse.Status { return m.FS.Rmdir(cancel, h, name) })
}

// second routes a request's other node id (rename's new directory, link's
// source, copy_file_range's destination), which must be on the same mount:
// EXDEV otherwise.
func (v *VFS) second(m *mount, id *uint64) (uint64, fuse.Status) {
	orig := *id
	p, m2 := v.route(orig)
	if m2 == nil {
		return orig, pseudoErr(p, fuse.EXDEV)
	}
	m2.release() // m holds the mount if it is the same
	if m2 != m {
		return orig, fuse.EXDEV
	}
	*id = m.inner(orig)
	return orig, fuse.OK
}

func (v *VFS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	return v.onMount(&in.InHeader, fuse.EROFS, func(m *mount) fuse.Status {
		orig2, st := v.second(m, &in.Newdir)
		if !st.Ok() {
			return st
		}
		defer func() { in.Newdir = orig2 }()
		return m.FS.Rename(cancel, in, oldName, newName)
	})
}

func (v *VFS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	return v.onMount(&in.InHeader, fuse.EROFS, func(m *mount) fuse.Status {
		orig2, st := v.second(m, &in.Oldnodeid)
		if !st.Ok() {
			return st
		}
		defer func() { in.Oldnodeid = orig2 }()
		return m.fixEntry(out, m.FS.Link(cancel, in, name, out))
	})
}

func (v *VFS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return v.onMount(h, fuse.EROFS, func(m *mount) fuse.Status { return m.fixEntry(out, m.FS.Symlink(cancel, h, target, name, out)) })
}

func (v *VFS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	return onMountN(v, h, fuse.EINVAL, func(m *mount) ([]byte, fuse.Status) { return m.FS.Readlink(cancel, h) })
}

func (v *VFS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	p, m, orig := v.enter(&in.InHeader)
	if m == nil {
		if p != nil && in.Mask&2 != 0 { // W_OK
			return fuse.EROFS
		}
		return pseudoErr(p, fuse.OK)
	}
	defer m.leave(&in.InHeader, orig)
	return m.FS.Access(cancel, in)
}

func (v *VFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	return onMountN(v, h, fuse.ENOATTR, func(m *mount) (uint32, fuse.Status) { return m.FS.GetXAttr(cancel, h, attr, dest) })
}

func (v *VFS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	return onMountN(v, h, fuse.OK, func(m *mount) (uint32, fuse.Status) { return m.FS.ListXAttr(cancel, h, dest) })
}

func (v *VFS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	return v.onMount(&in.InHeader, fuse.EROFS, func(m *mount) fuse.Status { return m.FS.SetXAttr(cancel, in, attr, data) })
}

func (v *VFS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	return v.onMount(h, fuse.EROFS, func(m *mount) fuse.Status { return m.FS.RemoveXAttr(cancel, h, attr) })
}

func (v *VFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return v.onMount(&in.InHeader, fuse.EROFS, func(m *mount) fuse.Status { return m.fixEntry(&out.EntryOut, m.FS.Create(cancel, in, name, out)) })
}

func (v *VFS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	return v.onMount(&in.InHeader, fuse.EROFS, func(m *mount) fuse.Status { return m.fixEntry(&out.EntryOut, m.FS.Tmpfile(cancel, in, out)) })
}

func (v *VFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return v.onMount(&in.InHeader, fuse.Status(syscall.EISDIR), func(m *mount) fuse.Status { return m.FS.Open(cancel, in, out) })
}

// heldRead keeps a reference on the mount until the transport is done
// with a zero-copy result (whose fds must stay open until Done). Pooled:
// reads allocate nothing here.
type heldRead struct {
	fsapi.SegmentedResult
	m *mount
	v *VFS
}

func (r *heldRead) Done() {
	res, m, v := r.SegmentedResult, r.m, r.v
	if res == nil {
		return
	}
	*r = heldRead{}
	v.reads.Put(r)
	res.Done()
	m.release()
}

// Read passes the filesystem's result through; a file-segment result is
// still one (zero copy), with the mount held until Done.
func (v *VFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	return v.ReadContext(fsapi.CancelContext(cancel), in, buf)
}

// ReadContext is Read with the request's context, passed on to a mount
// that takes one (fsapi.ContextReader).
func (v *VFS) ReadContext(ctx context.Context, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	p, m, orig := v.enter(&in.InHeader)
	if m == nil {
		return nil, pseudoErr(p, fuse.Status(syscall.EISDIR))
	}
	held := false
	defer func() {
		in.NodeId = orig
		if !held { // also when the filesystem panics: the transport recovers
			m.release()
		}
	}()
	var res fuse.ReadResult
	var st fuse.Status
	if cr, ok := m.FS.(fsapi.ContextReader); ok {
		res, st = cr.ReadContext(ctx, in, buf)
	} else {
		res, st = m.FS.Read(ctx.Done(), in, buf)
	}
	if sr, ok := res.(fsapi.SegmentedResult); ok {
		r := v.reads.Get().(*heldRead)
		r.SegmentedResult, r.m, r.v = sr, m, v
		held = true
		return r, st
	}
	return res, st
}

func (v *VFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	return v.onMount(&in.InHeader, fuse.EBADF, func(m *mount) fuse.Status { return m.FS.Lseek(cancel, in, out) })
}

func (v *VFS) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	return v.onMount(&in.InHeader, fuse.ENOSYS, func(m *mount) fuse.Status { return m.FS.GetLk(cancel, in, out) })
}

func (v *VFS) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	return v.onMount(&in.InHeader, fuse.ENOSYS, func(m *mount) fuse.Status { return m.FS.SetLk(cancel, in) })
}

func (v *VFS) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	return v.onMount(&in.InHeader, fuse.ENOSYS, func(m *mount) fuse.Status { return m.FS.SetLkw(cancel, in) })
}

func (v *VFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	if _, m, orig := v.enter(&in.InHeader); m != nil {
		m.FS.Release(cancel, in)
		m.leave(&in.InHeader, orig)
	}
}

func (v *VFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	return onMountN(v, &in.InHeader, fuse.EROFS, func(m *mount) (uint32, fuse.Status) { return m.FS.Write(cancel, in, data) })
}

func (v *VFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	return onMountN(v, &in.InHeader, fuse.EROFS, func(m *mount) (uint32, fuse.Status) { return m.FS.Writev(cancel, in, data) })
}

func (v *VFS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	return onMountN(v, &in.InHeader, fuse.EBADF, func(m *mount) (uint32, fuse.Status) {
		orig2, st := v.second(m, &in.NodeIdOut)
		if !st.Ok() {
			return 0, st
		}
		defer func() { in.NodeIdOut = orig2 }()
		return m.FS.CopyFileRange(cancel, in)
	})
}

func (v *VFS) Ioctl(cancel <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	return v.onMount(&in.InHeader, fuse.Status(syscall.ENOTTY), func(m *mount) fuse.Status { return m.FS.Ioctl(cancel, in, inbuf, out, outbuf) })
}

func (v *VFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	return v.onMount(&in.InHeader, fuse.OK, func(m *mount) fuse.Status { return m.FS.Flush(cancel, in) })
}

func (v *VFS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return v.onMount(&in.InHeader, fuse.OK, func(m *mount) fuse.Status { return m.FS.Fsync(cancel, in) })
}

func (v *VFS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	return v.onMount(&in.InHeader, fuse.EROFS, func(m *mount) fuse.Status { return m.FS.Fallocate(cancel, in) })
}

func (v *VFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return v.onMount(&in.InHeader, fuse.OK, func(m *mount) fuse.Status { return m.FS.OpenDir(cancel, in, out) })
}

func (v *VFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return v.readDir(cancel, in, out, false)
}

func (v *VFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return v.readDir(cancel, in, out, true)
}

// readDir lists a pseudo directory, or passes READDIR(PLUS) on and
// namespaces the node ids and inode numbers in the reply.
func (v *VFS) readDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	p, m, orig := v.enter(&in.InHeader)
	if m == nil {
		if p == nil {
			return gone
		}
		return v.pseudoReadDir(cancel, p, in.Offset, out, plus)
	}
	defer m.leave(&in.InHeader, orig)
	start := len(out.Bytes())
	var st fuse.Status
	if plus {
		st = m.FS.ReadDirPlus(cancel, in, out)
	} else {
		st = m.FS.ReadDir(cancel, in, out)
	}
	m.fixDirents(out.Bytes()[start:], plus)
	return st
}

// pseudoReadDir lists ".", ".." and a pseudo directory's children (its
// subdirectories and mount points) from offset off.
func (v *VFS) pseudoReadDir(cancel <-chan struct{}, p *pnode, off uint64, out *fuse.DirEntryList, plus bool) fuse.Status {
	n := uint64(len(p.names)) + 2
	for i := off; i < n; i++ {
		e := fuse.DirEntry{Mode: syscall.S_IFDIR, Off: i + 1}
		var c *pnode
		var root fuse.EntryOut // a mount point's root, looked up
		switch i {
		case 0:
			e.Name, e.Ino = ".", p.ino
		case 1:
			e.Name, e.Ino = "..", p.parent
		default:
			c = p.children[p.names[i-2]]
			e.Name, e.Ino = c.name, c.ino
			if c.mnt != nil {
				if !v.mountRoot(cancel, c.mnt, &root).Ok() {
					continue // unmounted meanwhile
				}
				e.Ino = root.Ino
			}
		}
		if !plus {
			if !out.AddDirEntry(e) {
				break
			}
			continue
		}
		eo := out.AddDirLookupEntry(e)
		if eo == nil {
			break
		}
		switch {
		case c == nil: // "." and "..": the kernel takes no reference
		case c.mnt != nil:
			*eo = root
		default:
			v.pseudoEntry(c, eo)
		}
	}
	return fuse.OK
}

// Layout of READDIR(PLUS) replies: [fuse_entry_out] fuse_dirent name pad.
var (
	entryOutSize = int(unsafe.Sizeof(fuse.EntryOut{}))
	attrInoOff   = int(unsafe.Offsetof(fuse.EntryOut{}.Attr) + unsafe.Offsetof(fuse.Attr{}.Ino))
)

const direntSize = 24 // ino, off, namelen, type

// fixDirents namespaces the node ids and inode numbers of a mounted
// filesystem's READDIR(PLUS) reply in place.
func (m *mount) fixDirents(b []byte, plus bool) {
	ne := binary.NativeEndian
	for len(b) > 0 {
		if plus {
			if len(b) < entryOutSize {
				return
			}
			if id := ne.Uint64(b); id != 0 {
				g, ok := m.guest(id)
				if !ok {
					m.FS.Forget(id, 1)
					clear(b[:entryOutSize])
				} else {
					ne.PutUint64(b, g)
					ne.PutUint64(b[attrInoOff:], m.fixIno(ne.Uint64(b[attrInoOff:])))
				}
			}
			b = b[entryOutSize:]
		}
		if len(b) < direntSize {
			return
		}
		ne.PutUint64(b, m.fixIno(ne.Uint64(b)))
		rec := (direntSize + int(ne.Uint32(b[16:])) + 7) &^ 7
		if rec > len(b) {
			return
		}
		b = b[rec:]
	}
}

func (v *VFS) ReleaseDir(in *fuse.ReleaseIn) {
	if _, m, orig := v.enter(&in.InHeader); m != nil {
		m.FS.ReleaseDir(in)
		m.leave(&in.InHeader, orig)
	}
}

func (v *VFS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return v.onMount(&in.InHeader, fuse.OK, func(m *mount) fuse.Status { return m.FS.FsyncDir(cancel, in) })
}

// StatFs of a pseudo directory reports an empty read-only filesystem.
func (v *VFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	p, m, orig := v.enter(h)
	if m == nil {
		if p == nil {
			return gone
		}
		t := v.tab.Load()
		*out = fuse.StatfsOut{Bsize: 4096, Frsize: 4096, NameLen: 255, Files: uint64(len(t.pseudo))}
		return fuse.OK
	}
	defer m.leave(h, orig)
	return m.FS.StatFs(cancel, h, out)
}

func (v *VFS) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	return v.onMount(&in.InHeader, fuse.ENOSYS, func(m *mount) fuse.Status {
		st := m.FS.Statx(cancel, in, out)
		out.Ino = m.fixIno(out.Ino)
		return st
	})
}

// SyncFS routes syncfs to the mounted filesystem if it implements it.
func (v *VFS) SyncFS(cancel <-chan struct{}, h *fuse.InHeader) fuse.Status {
	return v.onMount(h, fuse.OK, func(m *mount) fuse.Status {
		if s, ok := m.FS.(fsapi.SyncFSer); ok {
			return s.SyncFS(cancel, h)
		}
		return fuse.ENOSYS
	})
}

// Init hands the server to every filesystem, now and when mounted.
func (v *VFS) Init(s *fuse.Server) {
	v.server.Store(s)
	v.each(func(m *mount) { m.FS.Init(s) })
}

// OnUnmount (DESTROY) is passed to every mounted filesystem.
func (v *VFS) OnUnmount() { v.each(func(m *mount) { m.FS.OnUnmount() }) }

func (v *VFS) each(f func(*mount)) {
	for _, m := range v.tab.Load().mounts {
		if m != nil && m.acquire() {
			f(m)
			m.release()
		}
	}
}
