package passthrough

import (
	"fmt"
	"os"
	"runtime"
	"strings"
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
