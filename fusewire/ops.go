package fusewire

import (
	"encoding/binary"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Handlers, one per opcode, registered in opTable. Each reads its input
// from r.inBuf and r.payload, calls the filesystem and leaves the reply in
// r.status, r.outData and r.outPayload (or r.readResult).

func doNothing(*request) {}

// withName calls f with the request's entry name, or fails with EINVAL.
func withName(r *request, f func(name string) fuse.Status) {
	name, st := r.entryName()
	if st.Ok() {
		st = f(name)
	}
	r.status = st
}

func doLookup(r *request) {
	withName(r, func(name string) fuse.Status {
		return r.d.fs.Lookup(r.cancel, r.header(), name, outStruct[fuse.EntryOut](r))
	})
}

func doForget(r *request) {
	r.forget(r.header().NodeId, inStruct[fuse.ForgetIn](r).Nlookup)
}

// forget passes one FORGET on. The root is never forgotten: the kernel
// holds it until DESTROY, and go-fuse's NodeFS deadlocks when a guest
// makes it drop the root.
func (r *request) forget(nodeid, nlookup uint64) {
	if r.d.opts.Mount.RememberInodes || nodeid <= fuse.FUSE_ROOT_ID || nlookup == 0 {
		return
	}
	r.d.fs.Forget(nodeid, nlookup)
}

func doBatchForget(r *request) {
	count := int(binary.LittleEndian.Uint32(r.inBytes()[inHeaderSize:]))
	p := r.payloadBytes()
	if have := len(p) / forgetOneSize; count > have {
		r.violation("BATCH_FORGET count exceeds its entries")
		count = have
	}
	for i := range count {
		e := p[i*forgetOneSize:]
		r.forget(binary.LittleEndian.Uint64(e), binary.LittleEndian.Uint64(e[8:]))
	}
}

// doInterrupt does nothing: a virtio-fs guest never sends INTERRUPT (its
// transport has no way to), and requests are cancelled through their
// context when the device stops.
func doInterrupt(*request) {}

func doGetattr(r *request) {
	r.status = r.d.fs.GetAttr(r.cancel, inStruct[fuse.GetAttrIn](r), outStruct[fuse.AttrOut](r))
}

func doSetattr(r *request) {
	r.status = r.d.fs.SetAttr(r.cancel, inStruct[fuse.SetAttrIn](r), outStruct[fuse.AttrOut](r))
}

func doReadlink(r *request) {
	r.outPayload, r.status = r.d.fs.Readlink(r.cancel, r.header())
}

func doSymlink(r *request) {
	n, _, st := r.names(2)
	if !st.Ok() || !validName(n[0]) || n[1] == "" {
		r.status = fuse.EINVAL
		return
	}
	r.status = r.d.fs.Symlink(r.cancel, r.header(), n[1], n[0], outStruct[fuse.EntryOut](r))
}

func doMknod(r *request) {
	withName(r, func(name string) fuse.Status {
		return r.d.fs.Mknod(r.cancel, inStruct[fuse.MknodIn](r), name, outStruct[fuse.EntryOut](r))
	})
}

func doMkdir(r *request) {
	withName(r, func(name string) fuse.Status {
		return r.d.fs.Mkdir(r.cancel, inStruct[fuse.MkdirIn](r), name, outStruct[fuse.EntryOut](r))
	})
}

func doUnlink(r *request) {
	withName(r, func(name string) fuse.Status { return r.d.fs.Unlink(r.cancel, r.header(), name) })
}

func doRmdir(r *request) {
	withName(r, func(name string) fuse.Status { return r.d.fs.Rmdir(r.cancel, r.header(), name) })
}

// doRename serves RENAME (fuse_rename_in: newdir only; the rest of the
// struct stays zero) and RENAME2 (with flags).
func doRename(r *request) {
	n, _, st := r.names(2)
	if !st.Ok() || !validName(n[0]) || !validName(n[1]) {
		r.status = fuse.EINVAL
		return
	}
	r.status = r.d.fs.Rename(r.cancel, inStruct[fuse.RenameIn](r), n[0], n[1])
}

func doLink(r *request) {
	withName(r, func(name string) fuse.Status {
		return r.d.fs.Link(r.cancel, inStruct[fuse.LinkIn](r), name, outStruct[fuse.EntryOut](r))
	})
}

func doOpen(r *request) {
	r.status = r.d.fs.Open(r.cancel, inStruct[fuse.OpenIn](r), outStruct[fuse.OpenOut](r))
}

func doOpendir(r *request) {
	r.status = r.d.fs.OpenDir(r.cancel, inStruct[fuse.OpenIn](r), outStruct[fuse.OpenOut](r))
}

func doCreate(r *request) {
	withName(r, func(name string) fuse.Status {
		return r.d.fs.Create(r.cancel, inStruct[fuse.CreateIn](r), name, outStruct[fuse.CreateOut](r))
	})
}

// doTmpfile ignores the name the kernel sends (always "/", the anonymous
// dentry's), as go-fuse does.
func doTmpfile(r *request) {
	r.status = r.d.fs.Tmpfile(r.cancel, inStruct[fuse.CreateIn](r), outStruct[fuse.CreateOut](r))
}

// doWrite hands the payload to Writev as the guest's own buffers. A
// filesystem without Writev gets Write: on the guest's buffer when the
// payload sits in one descriptor, else on one gathered copy.
func doWrite(r *request) {
	in := inStruct[fuse.WriteIn](r)
	if int(in.Size) != r.payloadLen {
		r.status = fuse.EINVAL
		return
	}
	out := outStruct[fuse.WriteOut](r)
	data := r.payload
	if len(data) == 0 {
		data = [][]byte{nil}
	}
	out.Size, r.status = r.d.fs.Writev(r.cancel, in, data)
	if r.status != fuse.ENOSYS {
		return
	}
	out.Size, r.status = r.d.fs.Write(r.cancel, in, r.payloadBytes())
}

func doStatfs(r *request) {
	r.status = r.d.fs.StatFs(r.cancel, r.header(), outStruct[fuse.StatfsOut](r))
}

func doRelease(r *request) {
	r.d.fs.Release(r.cancel, inStruct[fuse.ReleaseIn](r))
}

func doReleasedir(r *request) {
	r.d.fs.ReleaseDir(inStruct[fuse.ReleaseIn](r))
}

func doFsync(r *request) {
	r.status = r.d.fs.Fsync(r.cancel, inStruct[fuse.FsyncIn](r))
}

func doFsyncdir(r *request) {
	r.status = r.d.fs.FsyncDir(r.cancel, inStruct[fuse.FsyncIn](r))
}

func doFlush(r *request) {
	r.status = r.d.fs.Flush(r.cancel, inStruct[fuse.FlushIn](r))
}

// xattrArgs checks that xattrs are enabled and returns the attribute name
// and the bytes after it; on failure it sets r.status and returns false.
func xattrArgs(r *request) (string, []byte, bool) {
	if r.d.opts.Mount.DisableXAttrs {
		r.status = fuse.ENOSYS
		return "", nil, false
	}
	n, rest, st := r.names(1)
	if !st.Ok() || n[0] == "" {
		r.status = fuse.EINVAL
		return "", nil, false
	}
	return n[0], rest, true
}

func doSetxattr(r *request) {
	in := inStruct[fuse.SetXAttrIn](r)
	name, value, ok := xattrArgs(r)
	if !ok {
		return
	}
	if int(in.Size) > len(value) {
		r.status = fuse.EINVAL
		return
	}
	r.status = r.d.fs.SetXAttr(r.cancel, in, name, value[:in.Size])
}

func doRemovexattr(r *request) {
	if name, _, ok := xattrArgs(r); ok {
		r.status = r.d.fs.RemoveXAttr(r.cancel, r.header(), name)
	}
}

func doGetxattr(r *request) {
	name, _, ok := xattrArgs(r)
	if !ok {
		return
	}
	if r.d.opts.Mount.IgnoreSecurityLabels {
		switch name {
		case "security.capability", "system.posix_acl_access", "system.posix_acl_default":
			r.status = fuse.ENOATTR
			return
		}
	}
	xattrReply(r, func(dest []byte) (uint32, fuse.Status) {
		return r.d.fs.GetXAttr(r.cancel, r.header(), name, dest)
	})
}

func doListxattr(r *request) {
	if r.d.opts.Mount.DisableXAttrs {
		r.status = fuse.ENOSYS
		return
	}
	xattrReply(r, func(dest []byte) (uint32, fuse.Status) {
		return r.d.fs.ListXAttr(r.cancel, r.header(), dest)
	})
}

// xattrReply serves both shapes of GETXATTR/LISTXATTR: with size 0 the
// reply is the needed size (GetXAttrOut), else the data itself.
func xattrReply(r *request, get func(dest []byte) (uint32, fuse.Status)) {
	size := int(inStruct[fuse.GetXAttrIn](r).Size)
	if size == 0 {
		n, st := get(nil)
		if st == fuse.ERANGE {
			st = fuse.OK
		}
		outStruct[fuse.GetXAttrOut](r).Size = n
		r.status = st
		return
	}
	buf := r.dataBuffer(size, false)
	n, st := get(buf)
	r.status = st
	if st.Ok() {
		if int(n) > len(buf) {
			r.status = fuse.ERANGE
			return
		}
		r.outPayload = buf[:n]
	}
}

func doAccess(r *request) {
	r.status = r.d.fs.Access(r.cancel, inStruct[fuse.AccessIn](r))
}

func doGetlk(r *request) {
	r.status = r.d.fs.GetLk(r.cancel, inStruct[fuse.LkIn](r), outStruct[fuse.LkOut](r))
}

func doSetlk(r *request) {
	r.status = r.d.fs.SetLk(r.cancel, inStruct[fuse.LkIn](r))
}

func doSetlkw(r *request) {
	r.status = r.d.fs.SetLkw(r.cancel, inStruct[fuse.LkIn](r))
}

func doIoctl(r *request) {
	in := inStruct[fuse.IoctlIn](r)
	if int(in.InSize) != r.payloadLen {
		r.status = fuse.EINVAL
		return
	}
	outbuf := r.dataBuffer(int(in.OutSize), false)
	r.status = r.d.fs.Ioctl(r.cancel, in, r.payloadBytes(), outStruct[fuse.IoctlOut](r), outbuf)
	if r.status.Ok() {
		r.outPayload = outbuf
	}
}

func doFallocate(r *request) {
	r.status = r.d.fs.Fallocate(r.cancel, inStruct[fuse.FallocateIn](r))
}

func doLseek(r *request) {
	r.status = r.d.fs.Lseek(r.cancel, inStruct[fuse.LseekIn](r), outStruct[fuse.LseekOut](r))
}

func doCopyFileRange(r *request) {
	out := outStruct[fuse.WriteOut](r)
	out.Size, r.status = r.d.fs.CopyFileRange(r.cancel, inStruct[fuse.CopyFileRangeIn](r))
}

func doStatx(r *request) {
	r.status = r.d.fs.Statx(r.cancel, inStruct[fuse.StatxIn](r), outStruct[fuse.StatxOut](r))
}

func doSyncfs(r *request) {
	s, ok := r.d.fs.(SyncFSer)
	if !ok {
		r.status = fuse.ENOSYS
		return
	}
	r.status = s.SyncFS(r.cancel, r.header())
}

// doDestroy ends the session: the guest unmounted. A later INIT starts a
// new one.
func doDestroy(r *request) {
	r.d.session.Store(nil)
	r.d.fs.OnUnmount()
	r.d.log.WithFields(r.fields()).Info("FUSE session destroyed by the guest")
}

func doReaddir(r *request) {
	in := inStruct[fuse.ReadIn](r)
	l := fuse.NewDirEntryList(r.dataBuffer(int(in.Size), true), in.Offset)
	r.status = r.d.fs.ReadDir(r.cancel, in, l)
	r.outPayload = l.Bytes()
}

func doReaddirplus(r *request) {
	in := inStruct[fuse.ReadIn](r)
	l := fuse.NewDirEntryList(r.dataBuffer(int(in.Size), true), in.Offset)
	r.status = r.d.fs.ReadDirPlus(r.cancel, in, l)
	r.outPayload = l.Bytes()
}
