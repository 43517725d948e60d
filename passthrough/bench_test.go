package passthrough

import (
	"os"
	"strconv"
	"testing"

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
