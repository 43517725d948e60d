package passthrough

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"testing"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// BenchmarkLookupGetAttrForget is the daemon's share of a stat walk:
// lookup, getattr and forget of one name, with an fd cache smaller than the
// working set so that handles are reopened.
func BenchmarkLookupGetAttrForget(b *testing.B) {
	e := newEnv(b, Options{FdCacheSize: 64})
	const files = 1000
	for i := 0; i < files; i++ {
		os.WriteFile(e.host("f"+strconv.Itoa(i)), nil, 0o644)
	}
	h := hdr(1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var eo fuse.EntryOut
		if s := e.fs.Lookup(nil, &h, "f"+strconv.Itoa(i%files), &eo); !s.Ok() {
			b.Fatal(s)
		}
		var ao fuse.AttrOut
		if s := e.fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: hdr(eo.NodeId)}, &ao); !s.Ok() {
			b.Fatal(s)
		}
		e.fs.Forget(eo.NodeId, 1)
	}
}

// BenchmarkRead128K reads 128 KiB through the zero-copy result (Bytes is
// the fallback copy a transport without preadv would use).
func BenchmarkRead128K(b *testing.B) {
	e := newEnv(b, Options{})
	data := make([]byte, 8<<20)
	os.WriteFile(e.host("big"), data, 0o644)
	n := e.lookup(b, 1, "big").NodeId
	var oo fuse.OpenOut
	if s := e.fs.Open(nil, &fuse.OpenIn{InHeader: hdr(n), Flags: unix.O_RDONLY}, &oo); !s.Ok() {
		b.Fatal(s)
	}
	buf := make([]byte, 128<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		off := uint64(i%64) * uint64(len(buf))
		res, s := e.fs.Read(nil, &fuse.ReadIn{Fh: oo.Fh, Offset: off, Size: uint32(len(buf))}, nil)
		if !s.Ok() {
			b.Fatal(s)
		}
		if got, s := res.Bytes(buf); !s.Ok() || len(got) != len(buf) {
			b.Fatal(s)
		}
		res.Done()
	}
}

// BenchmarkLookupCold is the daemon's share of a cold `stat` by path: a
// LOOKUP of a name the guest does not know yet, then its FORGET, over a
// directory of 10,000 files, with inodes identified by file handle
// (prefer: openat2, fstat and name_to_handle_at per LOOKUP; the O_PATH fd
// goes to the LRU) and by a pinned O_PATH fd (never: openat2 and fstat; one
// fd per inode the guest holds, which a 10,000-file tree walk must fit in
// RLIMIT_NOFILE). The difference is what a file handle costs per LOOKUP.
func BenchmarkLookupCold(b *testing.B) {
	for _, mode := range []string{HandlesPrefer, HandlesNever} {
		b.Run("handles="+mode, func(b *testing.B) {
			e := newEnv(b, Options{InodeFileHandles: mode})
			const files = 10000
			for i := 0; i < files; i++ {
				os.WriteFile(e.host("f"+strconv.Itoa(i)), nil, 0o644)
			}
			names := make([]string, files)
			for i := range names {
				names[i] = "f" + strconv.Itoa(i)
			}
			h := hdr(1)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var eo fuse.EntryOut
				if s := e.fs.Lookup(nil, &h, names[i%files], &eo); !s.Ok() {
					b.Fatal(s)
				}
				e.fs.Forget(eo.NodeId, 1)
			}
		})
	}
}

// BenchmarkSyscallCost times the system calls a LOOKUP is made of, alone,
// on one file: what each adds to the request.
func BenchmarkSyscallCost(b *testing.B) {
	dir := b.TempDir()
	if err := os.WriteFile(dir+"/f", nil, 0o644); err != nil {
		b.Fatal(err)
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(dfd)
	fd, err := openBeneath(dfd, "f")
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	b.Run("openat2+close", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			f, err := openBeneath(dfd, "f")
			if err != nil {
				b.Fatal(err)
			}
			unix.Close(f)
		}
	})
	b.Run("openat+close", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			f, err := unix.Openat(dfd, "f", unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			unix.Close(f)
		}
	})
	b.Run("fstat", func(b *testing.B) {
		var st unix.Stat_t
		for i := 0; i < b.N; i++ {
			if err := unix.Fstat(fd, &st); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("name_to_handle_at", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH); err != nil {
				b.Skip("no file handles here:", err)
			}
		}
	})
}

// BenchmarkReadDirPages lists a directory of n entries the way a Linux
// guest does, one page (4 KiB) of entries per READDIR or READDIRPLUS,
// each request continuing at the last entry's offset, and forgets what
// READDIRPLUS looked up. Reported per entry.
func BenchmarkReadDirPages(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		for _, plus := range []bool{false, true} {
			b.Run(fmt.Sprintf("entries=%d/plus=%v", n, plus), func(b *testing.B) {
				e := newEnv(b, Options{})
				for i := 0; i < n; i++ {
					if err := os.WriteFile(e.host(fmt.Sprintf("file-%06d", i)), nil, 0o644); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					var oo fuse.OpenOut
					if s := e.fs.OpenDir(nil, &fuse.OpenIn{InHeader: hdr(1)}, &oo); !s.Ok() {
						b.Fatal(s)
					}
					seen, off := 0, uint64(0)
					for {
						ents := readDirPage(b, e, oo.Fh, off, plus)
						if len(ents) == 0 {
							break
						}
						seen += len(ents)
						off = ents[len(ents)-1].off
					}
					e.fs.ReleaseDir(&fuse.ReleaseIn{Fh: oo.Fh})
					if seen != n+2 {
						b.Fatalf("listed %d entries, want %d", seen, n+2)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*(n+2)), "ns/entry")
			})
		}
	}
}

// benchDirent is what parseDirents reads of one entry of a reply.
type benchDirent struct {
	off, node uint64
	name      string
}

// parseDirents splits a READDIR (fuse_dirent) or READDIRPLUS
// (fuse_entry_out then fuse_dirent) reply into its entries.
func parseDirents(t testing.TB, buf []byte, plus bool) []benchDirent {
	var ents []benchDirent
	eoSize := int(unsafe.Sizeof(fuse.EntryOut{}))
	for len(buf) > 0 {
		var d benchDirent
		if plus {
			if len(buf) < eoSize {
				t.Fatalf("short entry: %d bytes", len(buf))
			}
			d.node = binary.LittleEndian.Uint64(buf[0:8])
			buf = buf[eoSize:]
		}
		if len(buf) < 24 {
			t.Fatalf("short dirent: %d bytes", len(buf))
		}
		d.off = binary.LittleEndian.Uint64(buf[8:16])
		nl := int(binary.LittleEndian.Uint32(buf[16:20]))
		rec := (24 + nl + 7) &^ 7
		if rec > len(buf) {
			t.Fatalf("dirent of %d bytes in %d", rec, len(buf))
		}
		d.name = string(buf[24 : 24+nl])
		ents = append(ents, d)
		buf = buf[rec:]
	}
	return ents
}

// readDirPage asks for one page (4 KiB) of directory fh from off, as a
// Linux guest does, and forgets what a READDIRPLUS looked up.
func readDirPage(t testing.TB, e *env, fh, off uint64, plus bool) []benchDirent {
	t.Helper()
	out := make([]byte, 4096)
	l := fuse.NewDirEntryList(out, off)
	in := &fuse.ReadIn{InHeader: hdr(1), Fh: fh, Offset: off, Size: uint32(len(out))}
	var s fuse.Status
	if plus {
		s = e.fs.ReadDirPlus(nil, in, l)
	} else {
		s = e.fs.ReadDir(nil, in, l)
	}
	if !s.Ok() {
		t.Fatal(s)
	}
	ents := parseDirents(t, l.Bytes(), plus)
	for _, d := range ents {
		if plus && d.node != 0 {
			e.fs.Forget(d.node, 1)
		}
	}
	return ents
}
