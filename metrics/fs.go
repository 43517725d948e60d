package metrics

import (
	"context"
	"io"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/fsapi"
)

// FS is a filesystem counted into a Mount: nydusd's fifteen fops are
// timed and counted, everything else passes straight through. It keeps the
// filesystem's optional interfaces (fsapi.ContextReader, fsapi.SyncFSer,
// io.Closer) and passes read results through untouched, so zero-copy
// results stay zero-copy.
type FS struct {
	fuse.RawFileSystem
	m *Mount
}

// Wrap returns fs counted into m.
func Wrap(fs fuse.RawFileSystem, m *Mount) *FS { return &FS{RawFileSystem: fs, m: m} }

// Unwrap returns the counted filesystem.
func (f *FS) Unwrap() fuse.RawFileSystem { return f.RawFileSystem }

func ok(st fuse.Status) bool { return st.Ok() }

func (f *FS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	o := f.m.begin(FopLookup, h.NodeId, h.Unique)
	st := f.RawFileSystem.Lookup(cancel, h, name, out)
	o.end(ok(st), 0)
	return st
}

func (f *FS) Forget(nodeid, nlookup uint64) {
	o := f.m.begin(FopForget, nodeid, 0)
	f.RawFileSystem.Forget(nodeid, nlookup)
	o.end(true, 0)
}

func (f *FS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	o := f.m.begin(FopGetattr, in.NodeId, in.Unique)
	st := f.RawFileSystem.GetAttr(cancel, in, out)
	o.end(ok(st), 0)
	return st
}

func (f *FS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	o := f.m.begin(FopReadlink, h.NodeId, h.Unique)
	b, st := f.RawFileSystem.Readlink(cancel, h)
	o.end(ok(st), 0)
	return b, st
}

func (f *FS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	o := f.m.begin(FopAccess, in.NodeId, in.Unique)
	st := f.RawFileSystem.Access(cancel, in)
	o.end(ok(st), 0)
	return st
}

func (f *FS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	o := f.m.begin(FopGetxattr, h.NodeId, h.Unique)
	n, st := f.RawFileSystem.GetXAttr(cancel, h, attr, dest)
	o.end(ok(st), 0)
	return n, st
}

func (f *FS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	o := f.m.begin(FopListxattr, h.NodeId, h.Unique)
	n, st := f.RawFileSystem.ListXAttr(cancel, h, dest)
	o.end(ok(st), 0)
	return n, st
}

func (f *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	o := f.m.begin(FopOpen, in.NodeId, in.Unique)
	st := f.RawFileSystem.Open(cancel, in, out)
	o.end(ok(st), 0)
	return st
}

func (f *FS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	o := f.m.begin(FopRead, in.NodeId, in.Unique)
	res, st := f.RawFileSystem.Read(cancel, in, buf)
	o.end(ok(st), resultSize(res, st))
	return res, st
}

// ReadContext passes the request's context on when the filesystem takes
// one (the storage layer's cancellation and trace spans ride on it).
func (f *FS) ReadContext(ctx context.Context, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	o := f.m.begin(FopRead, in.NodeId, in.Unique)
	var res fuse.ReadResult
	var st fuse.Status
	if cr, isCR := f.RawFileSystem.(fsapi.ContextReader); isCR {
		res, st = cr.ReadContext(ctx, in, buf)
	} else {
		res, st = f.RawFileSystem.Read(ctx.Done(), in, buf)
	}
	o.end(ok(st), resultSize(res, st))
	return res, st
}

// resultSize is the byte count of a read result (for a file-segment
// result, the bytes it covers; a short file ends it earlier).
func resultSize(res fuse.ReadResult, st fuse.Status) int {
	if !st.Ok() || res == nil {
		return 0
	}
	return res.Size()
}

func (f *FS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	o := f.m.begin(FopRelease, in.NodeId, in.Unique)
	f.RawFileSystem.Release(cancel, in)
	o.end(true, 0)
}

func (f *FS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	o := f.m.begin(FopStatfs, h.NodeId, h.Unique)
	st := f.RawFileSystem.StatFs(cancel, h, out)
	o.end(ok(st), 0)
	return st
}

func (f *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	o := f.m.begin(FopOpendir, in.NodeId, in.Unique)
	st := f.RawFileSystem.OpenDir(cancel, in, out)
	o.end(ok(st), 0)
	return st
}

func (f *FS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	o := f.m.begin(FopReaddir, in.NodeId, in.Unique)
	st := f.RawFileSystem.ReadDir(cancel, in, out)
	o.end(ok(st), 0)
	return st
}

func (f *FS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	o := f.m.begin(FopReaddirplus, in.NodeId, in.Unique)
	st := f.RawFileSystem.ReadDirPlus(cancel, in, out)
	o.end(ok(st), 0)
	return st
}

// SyncFS passes SYNCFS on when the filesystem answers it, else ENOSYS (as
// the transport does for a filesystem without it).
func (f *FS) SyncFS(cancel <-chan struct{}, h *fuse.InHeader) fuse.Status {
	if s, isS := f.RawFileSystem.(fsapi.SyncFSer); isS {
		return s.SyncFS(cancel, h)
	}
	return fuse.ENOSYS
}

// Close closes the filesystem if it can be closed.
func (f *FS) Close() error {
	if c, isC := f.RawFileSystem.(io.Closer); isC {
		return c.Close()
	}
	return nil
}
