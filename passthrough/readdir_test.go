package passthrough

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestReadDirBounded: a guest asking for 16 MiB READDIRs on many open
// directories costs no memory per handle, and one reply carries at most
// MaxReadDir bytes of entries.
func TestReadDirBounded(t *testing.T) {
	e := newEnv(t, Options{})
	long := strings.Repeat("n", 200)
	for i := 0; i < 6000; i++ {
		if err := os.WriteFile(e.host(fmt.Sprintf("%s%05d", long, i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const handles, ask = 24, 16 << 20
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	out := make([]byte, 8192)
	before := heap()
	var fhs []uint64
	for i := 0; i < handles; i++ {
		var oo fuse.OpenOut
		if s := e.fs.OpenDir(nil, &fuse.OpenIn{InHeader: hdr(1)}, &oo); !s.Ok() {
			t.Fatal(s)
		}
		fhs = append(fhs, oo.Fh)
		l := fuse.NewDirEntryList(out, 0)
		if s := e.fs.ReadDir(nil, &fuse.ReadIn{InHeader: hdr(1), Fh: oo.Fh, Size: ask}, l); !s.Ok() {
			t.Fatal(s)
		}
	}
	grown := int64(heap()) - int64(before)
	for _, fh := range fhs {
		e.fs.ReleaseDir(&fuse.ReleaseIn{Fh: fh})
	}
	if grown > 8<<20 {
		t.Errorf("%d open directories after %d-byte READDIRs hold %d MiB", handles, ask, grown>>20)
	}

	// One 16 MiB request answers at most MaxReadDir bytes, plain and plus.
	for _, plus := range []bool{false, true} {
		var oo fuse.OpenOut
		if s := e.fs.OpenDir(nil, &fuse.OpenIn{InHeader: hdr(1)}, &oo); !s.Ok() {
			t.Fatal(s)
		}
		l := fuse.NewDirEntryList(make([]byte, 4<<20), 0)
		in := &fuse.ReadIn{InHeader: hdr(1), Fh: oo.Fh, Size: 4 << 20}
		var s fuse.Status
		if plus {
			s = e.fs.ReadDirPlus(nil, in, l)
		} else {
			s = e.fs.ReadDir(nil, in, l)
		}
		e.fs.ReleaseDir(&fuse.ReleaseIn{Fh: oo.Fh})
		if !s.Ok() {
			t.Fatal(s)
		}
		if n := len(l.Bytes()); n > MaxReadDir || n < MaxReadDir/2 {
			t.Errorf("plus=%v: a 4 MiB READDIR answered %d bytes, want at most (and near) %d", plus, n, MaxReadDir)
		}
	}
}

// TestReadDirPagesResume lists a large directory a page at a time, as a
// guest does, with the entries one reply had no room for kept by the
// handle for the next request: every entry comes exactly once; a request
// at an earlier offset (seekdir, a rewind to 0) starts there again; and
// past maxParkedDirBufs handles holding entries, listings stay correct.
func TestReadDirPagesResume(t *testing.T) {
	e := newEnv(t, Options{})
	const n = 3000
	want := map[string]bool{".": true, "..": true}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("entry-with-a-longish-name-%05d", i)
		want[name] = true
		if err := os.WriteFile(e.host(name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	open := func() uint64 {
		var oo fuse.OpenOut
		if s := e.fs.OpenDir(nil, &fuse.OpenIn{InHeader: hdr(1)}, &oo); !s.Ok() {
			t.Fatal(s)
		}
		return oo.Fh
	}
	page := func(fh, off uint64, plus bool) []benchDirent { return readDirPage(t, e, fh, off, plus) }
	// listFrom pages from off to the end and returns the names in order.
	listFrom := func(fh, off uint64, plus bool) (names []string, offs []uint64) {
		for {
			ents := page(fh, off, plus)
			if len(ents) == 0 {
				return names, offs
			}
			for _, d := range ents {
				names = append(names, d.name)
				offs = append(offs, d.off)
			}
			off = ents[len(ents)-1].off
		}
	}
	checkAll := func(t *testing.T, names []string) {
		t.Helper()
		seen := map[string]bool{}
		for _, nm := range names {
			if seen[nm] {
				t.Fatalf("%q listed twice", nm)
			}
			if !want[nm] {
				t.Fatalf("%q listed, not in the directory", nm)
			}
			seen[nm] = true
		}
		if len(seen) != len(want) {
			t.Fatalf("listed %d entries, want %d", len(seen), len(want))
		}
	}
	for _, plus := range []bool{false, true} {
		t.Run(fmt.Sprintf("plus=%v", plus), func(t *testing.T) {
			fh := open()
			defer e.fs.ReleaseDir(&fuse.ReleaseIn{Fh: fh})
			names, offs := listFrom(fh, 0, plus)
			checkAll(t, names)

			// Rewind: the same listing again on the same handle.
			again, _ := listFrom(fh, 0, plus)
			if fmt.Sprint(again) != fmt.Sprint(names) {
				t.Fatal("a rewound listing differs from the first")
			}
			// Resume at an earlier offset (seekdir), mid-way through a
			// page the handle has buffered.
			first := page(fh, 0, plus)
			mid := len(names) / 2
			rest, _ := listFrom(fh, offs[mid], plus)
			if fmt.Sprint(rest) != fmt.Sprint(names[mid+1:]) {
				t.Fatalf("resuming after entry %d listed %d entries, want the %d after it", mid, len(rest), len(names)-mid-1)
			}
			if len(first) == 0 || first[0].name != names[0] {
				t.Fatal("first page after a rewind does not start with the first entry")
			}
		})
	}
	t.Run("past-the-parked-bound", func(t *testing.T) {
		// More handles than maxParkedDirBufs, each holding unlisted
		// entries after one page; then each listed to the end.
		var fhs []uint64
		firsts := map[uint64][]benchDirent{}
		for i := 0; i < maxParkedDirBufs+20; i++ {
			fh := open()
			fhs = append(fhs, fh)
			firsts[fh] = page(fh, 0, false)
		}
		if got := e.fs.parkedDirBufs.Load(); got > maxParkedDirBufs {
			t.Errorf("%d buffers parked, bound %d", got, maxParkedDirBufs)
		}
		for _, fh := range fhs {
			f := firsts[fh]
			names := make([]string, 0, len(want))
			for _, d := range f {
				names = append(names, d.name)
			}
			rest, _ := listFrom(fh, f[len(f)-1].off, false)
			checkAll(t, append(names, rest...))
			e.fs.ReleaseDir(&fuse.ReleaseIn{Fh: fh})
		}
		if got := e.fs.parkedDirBufs.Load(); got != 0 {
			t.Errorf("%d buffers still parked after every handle was released", got)
		}
	})
}

// TestReadDirPlusKnownEntries: a READDIRPLUS entry whose inode is already
// known (by an O_PATH fd) is answered without a new lookup, with the same
// node ID, a counted lookup and fresh attributes; a name replaced since
// (another inode under it) and a name mounted over are looked up in full.
// Inodes known by file handle (--inode-file-handles=prefer) are always
// looked up in full.
func TestReadDirPlusKnownEntries(t *testing.T) {
	for _, tc := range []struct {
		handles       string
		second, third uint64 // entries answered as known
	}{
		{HandlesNever, 3, 1},
		{HandlesPrefer, 0, 0},
	} {
		t.Run("handles="+tc.handles, func(t *testing.T) {
			testReadDirPlusKnownEntries(t, tc.handles, tc.second, tc.third)
		})
	}
}

func testReadDirPlusKnownEntries(t *testing.T, handles string, wantSecond, wantThird uint64) {
	e := newEnv(t, Options{InodeFileHandles: handles})
	for _, n := range []string{"a", "b", "mnt"} {
		if err := os.Mkdir(e.host(n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	list := func() (map[string]uint64, map[string]fuse.EntryOut) { return e.readDirPlus(t, 1) }
	first, _ := list()
	if got := e.fs.knownEntries.Load(); got != 0 {
		t.Fatalf("%d entries answered as known in the first listing", got)
	}
	// Known: the same nodes, their attributes as they are now.
	if err := os.Chmod(e.host("a"), 0o700); err != nil {
		t.Fatal(err)
	}
	second, eo := list()
	if got := e.fs.knownEntries.Load(); got != wantSecond {
		t.Errorf("%d of 3 entries answered as known in the second listing, want %d", got, wantSecond)
	}
	for n, id := range first {
		if second[n] != id {
			t.Errorf("%s: node %d, then %d", n, id, second[n])
		}
	}
	if m := eo["a"].Attr.Mode & 0o777; m != 0o700 {
		t.Errorf("a's mode %o after chmod 700", m)
	}
	// Each listing counted one lookup: one FORGET leaves the node alive,
	// the second ends it.
	var ao fuse.AttrOut
	e.fs.Forget(first["b"], 1)
	if s := e.fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(first["b"])}, &ao); !s.Ok() {
		t.Errorf("b after one of two forgets: %v", s)
	}
	e.fs.Forget(first["b"], 1)
	if s := e.fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(first["b"])}, &ao); s.Ok() {
		t.Errorf("b after two forgets of two listings: %v", s)
	}
	// Replaced and mounted over: full lookups, new nodes.
	if err := os.Rename(e.host("a"), e.host("old-a")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(e.host("a"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.mountIn(t, "tmpfs", "", "mnt")
	before := e.fs.knownEntries.Load()
	third, eo := list()
	if third["a"] == first["a"] || third["mnt"] == first["mnt"] {
		t.Errorf("replaced a: node %d (was %d); mounted-over mnt: node %d (was %d)", third["a"], first["a"], third["mnt"], first["mnt"])
	}
	if eo["a"].Attr.Mode&0o777 != 0o755 {
		t.Errorf("new a's mode %o", eo["a"].Attr.Mode&0o777)
	}
	if got := e.fs.knownEntries.Load() - before; got != wantThird {
		t.Errorf("%d entries answered as known in the third listing, want %d (old-a, unless by handle)", got, wantThird)
	}
	if third["old-a"] != first["a"] {
		t.Errorf("a renamed to old-a: node %d, was %d", third["old-a"], first["a"])
	}
	// The mounted-over directory was listed twice as itself: two FORGETs
	// end it (the third listing's look at it counted nothing).
	e.fs.Forget(first["mnt"], 2)
	if s := e.fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(first["mnt"])}, &ao); s.Ok() {
		t.Errorf("the mounted-over directory's node after the FORGETs of its two listings: %v", s)
	}
}

// readDirPlus lists directory node dir with one READDIRPLUS (between an
// OPENDIR and a RELEASEDIR) and returns its entries' node IDs and entries
// by name ("." and ".." left out).
func (e *env) readDirPlus(t *testing.T, dir uint64) (map[string]uint64, map[string]fuse.EntryOut) {
	t.Helper()
	var oo fuse.OpenOut
	if s := e.fs.OpenDir(nil, &fuse.OpenIn{InHeader: hdr(dir)}, &oo); !s.Ok() {
		t.Fatal(s)
	}
	defer e.fs.ReleaseDir(&fuse.ReleaseIn{InHeader: hdr(dir), Fh: oo.Fh})
	l := fuse.NewDirEntryList(make([]byte, 8192), 0)
	if s := e.fs.ReadDirPlus(nil, &fuse.ReadIn{InHeader: hdr(dir), Fh: oo.Fh, Size: 8192}, l); !s.Ok() {
		t.Fatal(s)
	}
	ents, outs, err := fuse.ParseDirLookupEntries(l.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	ids, eo := map[string]uint64{}, map[string]fuse.EntryOut{}
	for i, d := range ents {
		if d.Name != "." && d.Name != ".." {
			ids[d.Name], eo[d.Name] = outs[i].NodeId, outs[i]
		}
	}
	return ids, eo
}

// TestReadDirPlusListed: without file handles, READDIRPLUS answers a new
// entry from a statx of its name and pins no fd (a listed inode); its
// first use opens it where it was listed, confined, and only if the name
// is still the same inode (device, number and birth time): else ESTALE.
// A lookup of the name finds the listed node; a guest rename pins it
// first; a name whose inode number the host gave to a new inode
// is a new node.
func TestReadDirPlusListed(t *testing.T) {
	e := newEnv(t, Options{InodeFileHandles: HandlesNever})
	names := []string{"kept", "renamed", "replaced", "symlinked", "guest-renamed", "looked-up", "recycled", "sub"}
	for _, n := range names[:len(names)-1] {
		if err := os.WriteFile(e.host(n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(e.host("sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"child", "child2"} {
		if err := os.WriteFile(e.host("sub", c), []byte("child"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pinned := func() int64 { used, _ := e.fs.OpenFiles(); return int64(used) }
	before := pinned()
	ids, eo := e.readDirPlus(t, 1)
	if got := e.fs.listedEntries.Load(); got != uint64(len(names)) {
		t.Fatalf("%d of %d entries listed without an fd", got, len(names))
	}
	if got := pinned() - before; got != 0 {
		t.Fatalf("the listing pinned %d fds", got)
	}
	for _, n := range names {
		if ids[n] == 0 || eo[n].Attr.Ino != mustStat(t, e.host(n)).Ino {
			t.Fatalf("%s: node %d, attributes %+v", n, ids[n], eo[n].Attr)
		}
	}
	getattr := func(n string) fuse.Status {
		var ao fuse.AttrOut
		return e.fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(ids[n])}, &ao)
	}
	// First use: opened and pinned.
	if s := getattr("kept"); !s.Ok() {
		t.Fatalf("GETATTR of a listed inode: %v", s)
	}
	if got := pinned() - before; got != 1 {
		t.Fatalf("%d fds pinned after the first use of one listed inode, want 1", got)
	}
	// Changed on the host since the listing: ESTALE, never another inode.
	if err := os.Rename(e.host("renamed"), e.host("renamed-away")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.host("replaced")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.host("replaced"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.host("symlinked")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(e.outside, "secret"), e.host("symlinked")); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"renamed", "replaced", "symlinked"} {
		if s := getattr(n); s != fuse.Status(syscall.ESTALE) {
			t.Errorf("GETATTR of listed %q changed on the host: %v, want ESTALE", n, s)
		}
	}
	// Renamed by the guest: still served.
	rn := fuse.RenameIn{InHeader: hdr(1), Newdir: 1}
	if s := e.fs.Rename(nil, &rn, "guest-renamed", "guest-renamed-2"); !s.Ok() {
		t.Fatal(s)
	}
	if s := getattr("guest-renamed"); !s.Ok() {
		t.Errorf("GETATTR of a listed inode the guest renamed: %v", s)
	}
	// Looked up: the same node, still listed.
	p0 := pinned()
	if out := e.lookup(t, 1, "looked-up"); out.NodeId != ids["looked-up"] {
		t.Errorf("lookup of a listed name: node %d, listed as %d", out.NodeId, ids["looked-up"])
	}
	if got := pinned() - p0; got != 0 {
		t.Errorf("the lookup pinned %d fds, want 0", got)
	}
	// Recycled: as if the host had given the listed inode's number to a
	// new file (its birth time differs), a lookup makes a new node and
	// the listed one answers ESTALE.
	e.fs.mu.Lock()
	e.fs.nodes[ids["recycled"]].btime.Sec--
	e.fs.mu.Unlock()
	if out := e.lookup(t, 1, "recycled"); out.NodeId == ids["recycled"] || out.NodeId == 0 {
		t.Errorf("lookup of a name whose listed inode was recycled: node %d (listed %d)", out.NodeId, ids["recycled"])
	}
	if s := getattr("recycled"); s != fuse.Status(syscall.ESTALE) {
		t.Errorf("GETATTR of a recycled listed inode: %v, want ESTALE", s)
	}
	// A listed directory opens where it was listed; its listed child
	// opens through it; once the directory is forgotten (a hostile
	// guest: Linux keeps a parent while it holds a child), a child not
	// opened yet is stale.
	sub, _ := e.readDirPlus(t, ids["sub"])
	var ao fuse.AttrOut
	if s := e.fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(sub["child"])}, &ao); !s.Ok() || ao.Size != 5 {
		t.Errorf("GETATTR of a listed child: %v, size %d", s, ao.Size)
	}
	e.fs.Forget(ids["sub"], 1)
	if s := e.fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(sub["child2"])}, &ao); s != fuse.Status(syscall.ESTALE) {
		t.Errorf("GETATTR of a listed child of a forgotten directory: %v, want ESTALE", s)
	}
	e.outsideUntouched(t)
}

// TestReadDirPlusWithoutBirthTimes: on a filesystem that keeps no birth
// times (ramfs, mounted inside the share), READDIRPLUS cannot tell a
// recycled inode number apart without an fd, so it lists nothing: each
// new entry is looked up in full and pinned, as LOOKUP does; a second
// listing answers the same nodes from the pinned inodes.
func TestReadDirPlusWithoutBirthTimes(t *testing.T) {
	e := newEnv(t, Options{InodeFileHandles: HandlesNever})
	if err := os.Mkdir(e.host("rf"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.mountIn(t, "ramfs", "", "rf")
	for _, n := range []string{"a", "b", "c"} {
		if err := os.WriteFile(e.host("rf", n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rf := e.lookup(t, 1, "rf").NodeId
	pinned := func() int { used, _ := e.fs.OpenFiles(); return used }
	before := pinned()
	first, _ := e.readDirPlus(t, rf)
	if got := e.fs.listedEntries.Load(); got != 0 {
		t.Fatalf("%d entries listed without an fd on a filesystem without birth times", got)
	}
	if got := pinned() - before; got != 3 {
		t.Fatalf("%d fds pinned by listing 3 entries without birth times, want 3", got)
	}
	known := e.fs.knownEntries.Load()
	second, _ := e.readDirPlus(t, rf)
	if got := e.fs.knownEntries.Load() - known; got != 3 {
		t.Errorf("%d of 3 pinned entries answered as known in the second listing", got)
	}
	for n, id := range first {
		if id == 0 || second[n] != id {
			t.Errorf("%s: node %d, then %d", n, id, second[n])
		}
	}
}

// TestLookupListed: without file handles a LOOKUP is answered as a
// listing's entry is: one statx, no fd until the inode's first use. The
// inode opens where it was last seen (a hard link's other name, once the
// first is gone on the host), and a guest unlink or rename that takes a
// listed inode's name pins it first, so the guest keeps using it. On a
// filesystem without birth times a lookup pins the fd at once.
func TestLookupListed(t *testing.T) {
	e := newEnv(t, Options{InodeFileHandles: HandlesNever})
	for _, n := range []string{"a", "unlinked", "target", "source"} {
		if err := os.WriteFile(e.host(n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(e.host("a"), e.host("b")); err != nil {
		t.Fatal(err)
	}
	pinned := func() int { used, _ := e.fs.OpenFiles(); return used }
	getattr := func(id uint64) (fuse.Status, uint64) {
		var ao fuse.AttrOut
		s := e.fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(id)}, &ao)
		return s, ao.Size
	}
	before := pinned()
	a := e.lookup(t, 1, "a").NodeId
	if b := e.lookup(t, 1, "b").NodeId; b != a {
		t.Fatalf("two names of one inode: nodes %d and %d", a, b)
	}
	unlinked := e.lookup(t, 1, "unlinked").NodeId
	target := e.lookup(t, 1, "target").NodeId
	if got := pinned() - before; got != 0 {
		t.Fatalf("4 lookups pinned %d fds, want 0", got)
	}
	if err := os.Remove(e.host("a")); err != nil {
		t.Fatal(err)
	}
	if s, size := getattr(a); !s.Ok() || size != 1 {
		t.Errorf("GETATTR of a hard link whose first name is gone: %v, size %d", s, size)
	}
	h := hdr(1)
	if s := e.fs.Unlink(nil, &h, "unlinked"); !s.Ok() {
		t.Fatal(s)
	}
	if s, size := getattr(unlinked); !s.Ok() || size != 8 {
		t.Errorf("GETATTR of a listed inode the guest unlinked: %v, size %d", s, size)
	}
	rn := fuse.RenameIn{InHeader: hdr(1), Newdir: 1}
	if s := e.fs.Rename(nil, &rn, "source", "target"); !s.Ok() {
		t.Fatal(s)
	}
	if s, size := getattr(target); !s.Ok() || size != 6 {
		t.Errorf("GETATTR of a listed inode the guest renamed another over: %v, size %d", s, size)
	}
	if _, err := os.Lstat(e.host("unlinked")); !os.IsNotExist(err) {
		t.Errorf("unlink left the file: %v", err)
	}

	if err := os.Mkdir(e.host("rf"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.mountIn(t, "ramfs", "", "rf")
	if err := os.WriteFile(e.host("rf", "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rf := e.lookup(t, 1, "rf").NodeId
	p0 := pinned()
	e.lookup(t, rf, "f")
	if got := pinned() - p0; got != 1 {
		t.Errorf("a lookup without birth times pinned %d fds, want 1", got)
	}
	e.outsideUntouched(t)
}
