package vfs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// FuzzGuestNodeIDs sends requests with node ids, names and offsets of the
// guest's choosing to a table with a share at /containers and an image at
// /rafs/c/lowerdir: nothing may panic, and a node id the table did not
// hand out must not reach a filesystem as another mount's node.
func FuzzGuestNodeIDs(f *testing.F) {
	share := f.TempDir()
	if err := os.WriteFile(filepath.Join(share, "f"), []byte("data"), 0o644); err != nil {
		f.Fatal(err)
	}
	v := New(Options{Logger: quiet()})
	if err := v.Mount("/containers", passthroughMount(f, share)); err != nil {
		f.Fatal(err)
	}
	if err := v.Mount("/rafs/c/lowerdir", rafsMount(f, nil)); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { v.Close() })
	for _, id := range []uint64{0, 1, 2, 3, 4, 1<<56 | 1, 2<<56 | 1, 2<<56 | 2, 3<<56 | 1, 255<<56 | 1, 1<<64 - 1} {
		for op := uint8(0); op < 9; op++ {
			f.Add(op, id, "f", uint64(0))
		}
	}
	f.Add(uint8(0), uint64(1), "rafs", uint64(0))
	f.Add(uint8(3), uint64(3), "", uint64(1<<63))
	cancel := make(chan struct{})
	buf := make([]byte, 4096)
	f.Fuzz(func(t *testing.T, op uint8, id uint64, name string, off uint64) {
		h := fuse.InHeader{NodeId: id}
		switch op % 9 {
		case 0:
			var out fuse.EntryOut
			if st := v.Lookup(cancel, &h, name, &out); st.Ok() && out.NodeId != 0 {
				idx := out.NodeId >> IndexShift
				if idx != 0 && idx != id>>IndexShift && id>>IndexShift != 0 {
					t.Fatalf("lookup in %#x gave %#x on another mount", id, out.NodeId)
				}
			}
		case 1:
			v.GetAttr(cancel, &fuse.GetAttrIn{InHeader: h}, &fuse.AttrOut{})
		case 2, 3:
			l := fuse.NewDirEntryList(buf, off)
			in := &fuse.ReadIn{InHeader: h, Offset: off, Size: uint32(len(buf))}
			if op%9 == 2 {
				v.ReadDir(cancel, in, l)
			} else {
				v.ReadDirPlus(cancel, in, l)
			}
		case 4:
			res, _ := v.Read(cancel, &fuse.ReadIn{InHeader: h, Fh: off, Offset: off, Size: 4096}, buf)
			if res != nil {
				res.Bytes(buf)
				res.Done()
			}
		case 5:
			v.Forget(id, 0)
		case 6:
			v.StatFs(cancel, &h, &fuse.StatfsOut{})
		case 7:
			var out fuse.OpenOut
			if v.Open(cancel, &fuse.OpenIn{InHeader: h}, &out).Ok() {
				v.Release(cancel, &fuse.ReleaseIn{InHeader: h, Fh: out.Fh})
			}
		case 8:
			v.Rename(cancel, &fuse.RenameIn{InHeader: h, Newdir: off}, name, name)
		}
		if h.NodeId != id {
			t.Fatalf("request node id rewritten to %#x", h.NodeId)
		}
	})
}
