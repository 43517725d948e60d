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
