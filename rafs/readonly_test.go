package rafs

import (
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// roFS is a filesystem built on ReadOnly, as FS is: it implements one
// read operation itself.
type roFS struct{ ReadOnly }

func (roFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	out.Ino = 1
	return fuse.OK
}

func TestReadOnlyBase(t *testing.T) {
	var fs fuse.RawFileSystem = roFS{NewReadOnly()}
	status := func(_ uint32, st fuse.Status) fuse.Status { return st }
	for _, c := range []struct {
		op   string
		got  fuse.Status
		want fuse.Status
	}{
		{"SetAttr", fs.SetAttr(nil, &fuse.SetAttrIn{}, &fuse.AttrOut{}), fuse.EROFS},
		{"Mknod", fs.Mknod(nil, &fuse.MknodIn{}, "n", &fuse.EntryOut{}), fuse.EROFS},
		{"Mkdir", fs.Mkdir(nil, &fuse.MkdirIn{}, "d", &fuse.EntryOut{}), fuse.EROFS},
		{"Unlink", fs.Unlink(nil, &fuse.InHeader{}, "f"), fuse.EROFS},
		{"Rmdir", fs.Rmdir(nil, &fuse.InHeader{}, "d"), fuse.EROFS},
		{"Rename", fs.Rename(nil, &fuse.RenameIn{}, "a", "b"), fuse.EROFS},
		{"Link", fs.Link(nil, &fuse.LinkIn{}, "l", &fuse.EntryOut{}), fuse.EROFS},
		{"Symlink", fs.Symlink(nil, &fuse.InHeader{}, "t", "s", &fuse.EntryOut{}), fuse.EROFS},
		{"SetXAttr", fs.SetXAttr(nil, &fuse.SetXAttrIn{}, "user.a", nil), fuse.EROFS},
		{"RemoveXAttr", fs.RemoveXAttr(nil, &fuse.InHeader{}, "user.a"), fuse.EROFS},
		{"Create", fs.Create(nil, &fuse.CreateIn{}, "c", &fuse.CreateOut{}), fuse.EROFS},
		{"Tmpfile", fs.Tmpfile(nil, &fuse.CreateIn{}, &fuse.CreateOut{}), fuse.EROFS},
		{"Write", status(fs.Write(nil, &fuse.WriteIn{}, []byte("x"))), fuse.EROFS},
		{"Writev", status(fs.Writev(nil, &fuse.WriteIn{}, [][]byte{[]byte("x")})), fuse.EROFS},
		{"CopyFileRange", status(fs.CopyFileRange(nil, &fuse.CopyFileRangeIn{})), fuse.EROFS},
		{"Fallocate", fs.Fallocate(nil, &fuse.FallocateIn{}), fuse.EROFS},
		{"Flush", fs.Flush(nil, &fuse.FlushIn{}), fuse.OK},
		{"Fsync", fs.Fsync(nil, &fuse.FsyncIn{}), fuse.OK},
		{"FsyncDir", fs.FsyncDir(nil, &fuse.FsyncIn{}), fuse.OK},
		// What the embedding filesystem implements wins...
		{"GetAttr", fs.GetAttr(nil, &fuse.GetAttrIn{}, &fuse.AttrOut{}), fuse.OK},
		// ...and what nobody implements is ENOSYS.
		{"Lookup", fs.Lookup(nil, &fuse.InHeader{}, "x", &fuse.EntryOut{}), fuse.ENOSYS},
	} {
		t.Run(c.op, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("%s = %v, want %v", c.op, c.got, c.want)
			}
		})
	}
	n, st := fs.Write(nil, &fuse.WriteIn{}, []byte("x"))
	if n != 0 || st != fuse.EROFS {
		t.Errorf("Write wrote %d bytes (%v)", n, st)
	}
}
