package rafs

import "github.com/hanwen/go-fuse/v2/fuse"

// ReadOnly is the base of a read-only fuse.RawFileSystem: every operation
// that would change the filesystem answers EROFS, flushes and syncs (which
// have nothing to write) answer OK, and everything else goes to the
// embedded RawFileSystem (go-fuse's default answers ENOSYS). A filesystem
// embeds it and implements only the operations that read.
type ReadOnly struct{ fuse.RawFileSystem }

// NewReadOnly returns a ReadOnly over go-fuse's default filesystem.
func NewReadOnly() ReadOnly { return ReadOnly{fuse.NewDefaultRawFileSystem()} }

func (ReadOnly) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	return fuse.EROFS
}
func (ReadOnly) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}
func (ReadOnly) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}
func (ReadOnly) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fuse.EROFS
}
func (ReadOnly) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fuse.EROFS
}
func (ReadOnly) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	return fuse.EROFS
}
func (ReadOnly) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}
func (ReadOnly) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EROFS
}
func (ReadOnly) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	return fuse.EROFS
}
func (ReadOnly) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	return fuse.EROFS
}
func (ReadOnly) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return fuse.EROFS
}
func (ReadOnly) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	return fuse.EROFS
}
func (ReadOnly) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	return 0, fuse.EROFS
}
func (ReadOnly) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	return 0, fuse.EROFS
}
func (ReadOnly) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	return 0, fuse.EROFS
}
func (ReadOnly) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	return fuse.EROFS
}

// Nothing is ever dirty.
func (ReadOnly) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status    { return fuse.OK }
func (ReadOnly) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status    { return fuse.OK }
func (ReadOnly) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status { return fuse.OK }
