package rafs

import (
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestReadDirResume lists big directories (several v6 blocks) in one go
// and then one entry per call from each returned cookie: both agree.
func TestReadDirResume(t *testing.T) {
	for _, name := range []string{"v6-bootstrap-chunk-pos-438272.tar.gz", "v5-bootstrap-file-size-736032.tar.gz"} {
		data, err := snapshotterBoot(t, name)
		if err != nil {
			t.Fatal(err)
		}
		img, err := OpenBytes(data, "image.boot", Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer img.Close()
		for _, dir := range []string{"/usr/bin", "/usr/lib/x86_64-linux-gnu", "/"} {
			d := lookupPath(t, img, dir)
			var all []DirEntry
			img.ReadDir(d.Ino, 0, func(e DirEntry) bool { all = append(all, e); return true })
			if len(all) < 3 {
				t.Fatalf("%s: %d entries", dir, len(all))
			}
			var one []DirEntry
			for off := uint64(0); ; {
				var got *DirEntry
				if err := img.ReadDir(d.Ino, off, func(e DirEntry) bool { got = &e; return false }); err != nil {
					t.Fatal(err)
				}
				if got == nil {
					break
				}
				one = append(one, *got)
				off = got.Off
			}
			if len(one) != len(all) {
				t.Fatalf("%s %s: %d entries one by one, %d at once", name, dir, len(one), len(all))
			}
			for i := range all {
				if all[i] != one[i] {
					t.Fatalf("%s: entry %d: %+v vs %+v", dir, i, all[i], one[i])
				}
			}
			// Every listed name looks up to the listed inode.
			for _, e := range all[2:] {
				n, err := img.Lookup(d.Ino, e.Name)
				if err != nil || n.Ino != e.Ino || n.Mode&syscall.S_IFMT != e.Type {
					t.Fatalf("%s/%s: lookup %v %v", dir, e.Name, n, err)
				}
			}
		}
	}
}

// TestFSOps drives the RawFileSystem entry points directly.
func TestFSOps(t *testing.T) {
	img := openFixture(t, fx("erofs-utils/meta.img"), "", Options{AllowPlainEROFS: true})
	fs := NewFS(img, FSOptions{})
	root := &fuse.InHeader{NodeId: RootIno}
	var e fuse.EntryOut
	if st := fs.Lookup(nil, root, "missing", &e); st != fuse.OK || e.NodeId != 0 || e.EntryValid == 0 {
		t.Errorf("negative lookup: %v %+v", st, e)
	}
	if st := fs.Lookup(nil, root, "a.txt", &e); !st.Ok() || e.NodeId == 0 || e.Attr.Size != 12 || e.EntryValid < 1<<31 {
		t.Fatalf("lookup a.txt: %v %+v", st, e)
	}
	file := &fuse.InHeader{NodeId: e.NodeId}
	if st := fs.Lookup(nil, file, "x", &e); st != fuse.ENOTDIR {
		t.Errorf("lookup in a file: %v", st)
	}
	// xattrs: size query, ERANGE, value, list.
	buf := make([]byte, 64)
	if n, st := fs.GetXAttr(nil, file, "user.foo", nil); st != fuse.ERANGE || n != 3 {
		t.Errorf("getxattr size: %d %v", n, st)
	}
	if n, st := fs.GetXAttr(nil, file, "user.foo", buf); !st.Ok() || string(buf[:n]) != "bar" {
		t.Errorf("getxattr: %q %v", buf[:n], st)
	}
	if _, st := fs.GetXAttr(nil, file, "user.nope", buf); st != fuse.ENOATTR {
		t.Errorf("missing xattr: %v", st)
	}
	if n, st := fs.ListXAttr(nil, file, buf); !st.Ok() || string(buf[:n]) != "user.foo\x00" {
		t.Errorf("listxattr: %q %v", buf[:n], st)
	}
	if n, st := fs.ListXAttr(nil, file, buf[:2]); st != fuse.ERANGE || n != 9 {
		t.Errorf("listxattr ERANGE: %d %v", n, st)
	}
	// open: read-only only; KEEP_CACHE.
	var oo fuse.OpenOut
	if st := fs.Open(nil, &fuse.OpenIn{InHeader: *file, Flags: syscall.O_RDONLY}, &oo); !st.Ok() || oo.OpenFlags&fuse.FOPEN_KEEP_CACHE == 0 {
		t.Errorf("open: %v %+v", st, oo)
	}
	if st := fs.Open(nil, &fuse.OpenIn{InHeader: *file, Flags: syscall.O_RDWR}, &oo); st != fuse.EROFS {
		t.Errorf("open rdwr: %v", st)
	}
	if st := fs.OpenDir(nil, &fuse.OpenIn{InHeader: *file}, &oo); st != fuse.ENOTDIR {
		t.Errorf("opendir of a file: %v", st)
	}
	// access.
	for _, tc := range []struct {
		uid, mask uint32
		want      fuse.Status
	}{
		{0, 4, fuse.OK}, {0, 2, fuse.EROFS}, {0, 1, fuse.EACCES}, {1000, 4, fuse.OK}, {1000, 1, fuse.EACCES},
	} {
		if st := fs.Access(nil, &fuse.AccessIn{InHeader: fuse.InHeader{NodeId: file.NodeId, Caller: fuse.Caller{Owner: fuse.Owner{Uid: tc.uid}}}, Mask: tc.mask}); st != tc.want {
			t.Errorf("access uid %d mask %d: %v want %v", tc.uid, tc.mask, st, tc.want)
		}
	}
	// Writes answer EROFS.
	var ao fuse.AttrOut
	var co fuse.CreateOut
	for name, st := range map[string]fuse.Status{
		"setattr": fs.SetAttr(nil, &fuse.SetAttrIn{}, &ao),
		"mkdir":   fs.Mkdir(nil, &fuse.MkdirIn{InHeader: *root}, "d", &e),
		"mknod":   fs.Mknod(nil, &fuse.MknodIn{InHeader: *root}, "n", &e),
		"unlink":  fs.Unlink(nil, root, "a.txt"),
		"rmdir":   fs.Rmdir(nil, root, "dir1"),
		"rename":  fs.Rename(nil, &fuse.RenameIn{InHeader: *root}, "a.txt", "b"),
		"link":    fs.Link(nil, &fuse.LinkIn{InHeader: *root}, "l", &e),
		"symlink": fs.Symlink(nil, root, "t", "s", &e),
		"setx":    fs.SetXAttr(nil, &fuse.SetXAttrIn{InHeader: *file}, "user.x", nil),
		"rmx":     fs.RemoveXAttr(nil, file, "user.foo"),
		"create":  fs.Create(nil, &fuse.CreateIn{InHeader: *root}, "c", &co),
	} {
		if st != fuse.EROFS {
			t.Errorf("%s: %v, want EROFS", name, st)
		}
	}
	if _, st := fs.Write(nil, &fuse.WriteIn{InHeader: *file}, []byte("x")); st != fuse.EROFS {
		t.Errorf("write: %v", st)
	}
	var so fuse.StatfsOut
	if st := fs.StatFs(nil, root, &so); !st.Ok() || so.Bsize != 4096 || so.Files != 7 {
		t.Errorf("statfs: %v %+v", st, so)
	}
	// readdirplus fills attributes of every entry but . and ..
	l := fuse.NewDirEntryList(make([]byte, 4096), 0)
	if st := fs.ReadDirPlus(nil, &fuse.ReadIn{InHeader: *root}, l); !st.Ok() {
		t.Fatal(st)
	}
	if b := l.Bytes(); !strings.Contains(string(b), "big") && !strings.Contains(string(b), "dir1") {
		t.Errorf("readdirplus output lacks dir1")
	}
	// A forged node id is an error, not a crash.
	if st := fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: 1 << 40}}, &ao); st.Ok() {
		t.Errorf("getattr of a forged node id: %v", st)
	}
	if _, st := fs.Read(nil, &fuse.ReadIn{InHeader: *root, Size: 10}, nil); st != fuse.Status(syscall.EISDIR) {
		t.Errorf("read of a directory: %v", st)
	}
}
