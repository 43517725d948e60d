package fusewire

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"syscall"
	"testing"
	"unsafe"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestInitNegotiation(t *testing.T) {
	const kernel61 = 0xb7bfffffb // what a 6.1 guest proposes (guest-vm.md §7.3)
	tests := []struct {
		name      string
		opts      Options
		minor     uint32
		flags     uint64
		wantMinor uint32
		want      uint64 // must be set
		not       uint64 // must be clear
	}{
		{"linux 6.1 defaults", Options{}, 38, kernel61, 38,
			fuse.CAP_ASYNC_READ | fuse.CAP_PARALLEL_DIROPS | fuse.CAP_READDIRPLUS | fuse.CAP_READDIRPLUS_AUTO |
				fuse.CAP_BIG_WRITES | fuse.CAP_ATOMIC_O_TRUNC | fuse.CAP_EXPORT_SUPPORT | fuse.CAP_AUTO_INVAL_DATA |
				fuse.CAP_MAX_PAGES | capInitExt,
			fuse.CAP_SPLICE_READ | fuse.CAP_SPLICE_WRITE | fuse.CAP_SPLICE_MOVE | fuse.CAP_SUBMOUNTS |
				fuse.CAP_POSIX_LOCKS | fuse.CAP_FLOCK_LOCKS | fuse.CAP_WRITEBACK_CACHE | fuse.CAP_HAS_INODE_DAX},
		{"submounts announced", Options{AnnounceSubmounts: true}, 38, kernel61, 38, fuse.CAP_SUBMOUNTS, 0},
		{"fs options", Options{Mount: fuse.MountOptions{EnableLocks: true, ExplicitDataCacheControl: true,
			DisableReadDirPlus: true, ExtraCapabilities: fuse.CAP_WRITEBACK_CACHE | fuse.CAP_SPLICE_READ | fuse.CAP_SECURITY_CTX}}, 38, kernel61, 38,
			fuse.CAP_POSIX_LOCKS | fuse.CAP_FLOCK_LOCKS | fuse.CAP_EXPLICIT_INVAL_DATA | fuse.CAP_WRITEBACK_CACHE,
			fuse.CAP_AUTO_INVAL_DATA | fuse.CAP_READDIRPLUS | fuse.CAP_SPLICE_READ | fuse.CAP_SECURITY_CTX},
		{"newer kernel capped", Options{}, 45, kernel61, MaxMinor, fuse.CAP_ASYNC_READ, 0},
		{"old kernel without flags2", Options{}, 31, fuse.CAP_ASYNC_READ | fuse.CAP_BIG_WRITES, 31,
			fuse.CAP_ASYNC_READ | fuse.CAP_BIG_WRITES, capInitExt | fuse.CAP_MAX_PAGES},
		{"only what the kernel proposes", Options{}, 38, fuse.CAP_ASYNC_READ, 38, fuse.CAP_ASYNC_READ, fuse.CAP_BIG_WRITES},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil, tc.opts, false)
			out, err := e.client.Init(tc.minor, tc.flags, 128<<10)
			if err != nil {
				t.Fatal(err)
			}
			got := uint64(out.Flags) | uint64(out.Flags2)<<32
			if out.Major != 7 || out.Minor != tc.wantMinor {
				t.Errorf("version %d.%d, want 7.%d", out.Major, out.Minor, tc.wantMinor)
			}
			if got&tc.want != tc.want || got&tc.not != 0 {
				t.Errorf("flags %#x: want set %#x, clear %#x", got, tc.want, tc.not)
			}
			if out.MaxWrite != 1<<20 || out.MaxPages != 256 || out.MaxReadAhead != 128<<10 || out.TimeGran != 1 {
				t.Errorf("limits: %+v", out)
			}
			s := e.dev.Session()
			if s == nil || s.Kernel.Minor != tc.minor {
				t.Errorf("session %+v does not record the kernel's minor %d", s, tc.minor)
			}
		})
	}
}

func TestInitRejectsBadVersion(t *testing.T) {
	e := newEnv(t, nil, Options{}, false)
	in := fuse.InitIn{Major: 8, Minor: 38}
	_, err := e.client.Call(OpInit, 0, fuseclient.Bytes(&in)[inHeaderSize:], nil, 64, 64)
	if !errors.Is(err, syscall.EPROTO) {
		t.Fatalf("INIT 8.38: %v, want EPROTO", err)
	}
	if _, err := e.client.GetAttr(1); !errors.Is(err, syscall.EIO) {
		t.Fatalf("GETATTR before INIT: %v, want EIO", err)
	}
}

// lookupRequest builds LOOKUP of name under the root.
func lookupRequest(c *fuseclient.Client, name string) []byte {
	return c.Build(OpLookup, 1, nil, append([]byte(name), 0))
}

func TestSplitRequestEveryOffset(t *testing.T) {
	e := newEnv(t, nil, Options{}, true)
	e.writeFile(t, "file", []byte("hello"))
	c := e.client
	ent, err := c.Lookup(1, "file")
	if err != nil {
		t.Fatal(err)
	}
	oo, err := c.Open(ent.NodeId, uint32(os.O_RDWR))
	if err != nil {
		t.Fatal(err)
	}
	initIn := fuse.InitIn{Major: 7, Minor: 38, MaxReadAhead: 1 << 17, Flags: 0x7bfffffb | capInitExt, Flags2: 0xb}
	getattrIn := fuse.GetAttrIn{}
	writeIn := fuse.WriteIn{Fh: oo.Fh, Size: 5}
	readIn := fuse.ReadIn{Fh: oo.Fh, Size: 100}
	tests := []struct {
		name string
		req  []byte
		room int
	}{
		{"INIT", c.Build(OpInit, 0, fuseclient.Bytes(&initIn)[inHeaderSize:]), 16 + 64},
		{"LOOKUP", lookupRequest(c, "file"), 16 + 128},
		{"GETATTR", c.Build(OpGetattr, ent.NodeId, fuseclient.Bytes(&getattrIn)[inHeaderSize:]), 16 + 104},
		{"WRITE", c.Build(OpWrite, ent.NodeId, fuseclient.Bytes(&writeIn)[inHeaderSize:], []byte("HELLO")), 16 + 8},
		{"READ", c.Build(OpRead, ent.NodeId, fuseclient.Bytes(&readIn)[inHeaderSize:]), 16 + 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ref := e.raw(t, 1, [][]byte{tc.req}, []int{tc.room})
			if st := status(t, ref); st != 0 {
				t.Fatalf("errno %d", st)
			}
			for cut := 1; cut < len(tc.req); cut++ {
				for _, pieces := range [][][]byte{splitAt(tc.req, cut), append(chunks(tc.req[:cut], 1), tc.req[cut:])} {
					if out := e.raw(t, 1, pieces, []int{tc.room}); !bytes.Equal(out, ref) {
						t.Fatalf("cut at %d into %d pieces: reply %x, want %x", cut, len(pieces), out, ref)
					}
				}
			}
			// The reply split over writable buffers of every size.
			for n := 1; n <= 17; n++ {
				if out := e.raw(t, 1, [][]byte{tc.req}, sizesOf(tc.room, n)); !bytes.Equal(out, ref) {
					t.Fatalf("writable pieces of %d: reply %x, want %x", n, out, ref)
				}
			}
		})
	}
	if got, err := os.ReadFile(filepath.Join(e.dir, "file")); err != nil || string(got) != "HELLO" {
		t.Fatalf("file %q, %v", got, err)
	}
}

func TestReadScatter(t *testing.T) {
	e := newEnv(t, nil, Options{}, true)
	data := randomBytes(1<<20+123, 1)
	e.writeFile(t, "f", data)
	ent, err := e.client.Lookup(1, "f")
	if err != nil {
		t.Fatal(err)
	}
	oo, err := e.client.Open(ent.NodeId, uint32(os.O_RDONLY))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc int // writable descriptor size for the data
		off  int
		size int
	}{
		{1, 5, 3000},
		{7, 4093, 20000},
		{512, 0, 128 << 10},
		{4096, 0, 1 << 20},
		{4096, 1 << 20, 1 << 20}, // short at EOF: 123 bytes
		{4096, 3 << 20, 4096},    // past EOF: 0 bytes
		{1 << 20, 100, 1 << 20},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("desc%d_off%d_size%d", tc.desc, tc.off, tc.size), func(t *testing.T) {
			e.client.SplitWritable = func(structEnd, total int) []int {
				return append([]int{structEnd}, sizesOf(total-structEnd, tc.desc)...)
			}
			defer func() { e.client.SplitWritable = nil }()
			got, err := e.client.Read(ent.NodeId, oo.Fh, uint64(tc.off), uint32(tc.size))
			if err != nil {
				t.Fatal(err)
			}
			want := data[min(tc.off, len(data)):min(tc.off+tc.size, len(data))]
			if !bytes.Equal(got, want) {
				t.Fatalf("read %d bytes, want %d (equal prefix %v)", len(got), len(want), bytes.HasPrefix(want, got))
			}
		})
	}
}

// countingFS wraps a filesystem so that Read returns a fusewire.FileResult
// on a file of its own, counting calls of Bytes.
type countingFS struct {
	fuse.RawFileSystem
	fd    int
	bytes atomic.Int64
	done  atomic.Int64
}

type countingResult struct {
	SegmentedResult
	fs *countingFS
}

func (r countingResult) Bytes(b []byte) ([]byte, fuse.Status) {
	r.fs.bytes.Add(1)
	return r.SegmentedResult.Bytes(b)
}

func (r countingResult) Done() { r.fs.done.Add(1) }

func (c *countingFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	res := FileResult(c.fd, int64(in.Offset), int(in.Size)).(SegmentedResult)
	return countingResult{res, c}, fuse.OK
}

func TestZeroCopyRead(t *testing.T) {
	data := randomBytes(300000, 2)
	p := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfs := &countingFS{fd: int(f.Fd())}
	e := newEnv(t, func(r fuse.RawFileSystem) fuse.RawFileSystem { cfs.RawFileSystem = r; return cfs }, Options{}, true)
	e.client.SplitWritable = func(structEnd, total int) []int {
		return append([]int{structEnd}, sizesOf(total-structEnd, 4096)...)
	}
	for _, off := range []int{0, 4095, 299000} {
		got, err := e.client.Read(1, 0, uint64(off), 128<<10)
		if err != nil {
			t.Fatal(err)
		}
		if want := data[off:min(off+128<<10, len(data))]; !bytes.Equal(got, want) {
			t.Fatalf("off %d: %d bytes differ from the file's %d", off, len(got), len(want))
		}
	}
	if n := cfs.bytes.Load(); n != 0 {
		t.Errorf("Bytes called %d times; the SegmentedResult path must preadv", n)
	}
	if n := cfs.done.Load(); n != 3 {
		t.Errorf("Done called %d times, want 3", n)
	}
}

func TestWriteScatter(t *testing.T) {
	for _, desc := range []int{1, 3, 100, 4096, 1 << 20} {
		t.Run(fmt.Sprint(desc), func(t *testing.T) {
			e := newEnv(t, nil, Options{}, true)
			co, err := e.client.Create(1, "w", uint32(os.O_RDWR), 0o644)
			if err != nil {
				t.Fatal(err)
			}
			data := randomBytes(min(desc*300, 1<<20), uint64(desc))
			e.client.SplitReadable = func(req []byte, structEnd int) [][]byte {
				return append([][]byte{req[:structEnd]}, chunks(req[structEnd:], desc)...)
			}
			n, err := e.client.Write(co.NodeId, co.Fh, 10, data)
			if err != nil || int(n) != len(data) {
				t.Fatalf("WRITE: %d, %v", n, err)
			}
			e.client.SplitReadable = nil
			if err := e.client.Release(co.NodeId, co.Fh); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(e.dir, "w"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[10:], data) || len(got) != 10+len(data) {
				t.Fatalf("file has %d bytes, want %d", len(got), 10+len(data))
			}
		})
	}
}

func TestReaddirplusSmallBuffers(t *testing.T) {
	e := newEnv(t, nil, Options{}, true)
	var want []string
	for i := range 60 {
		n := fmt.Sprintf("file-with-a-longish-name-%03d", i)
		e.writeFile(t, n, []byte(n))
		want = append(want, n)
	}
	oo, err := e.client.OpenDir(1)
	if err != nil {
		t.Fatal(err)
	}
	for _, desc := range []int{1, 7, 64, 4096} {
		t.Run(fmt.Sprint(desc), func(t *testing.T) {
			e.client.SplitWritable = func(structEnd, total int) []int { return sizesOf(total, desc) }
			defer func() { e.client.SplitWritable = nil }()
			var got []string
			off := uint64(0)
			for {
				ents, err := e.client.ReadDirPlus(1, oo.Fh, off, 1024)
				if err != nil {
					t.Fatal(err)
				}
				if len(ents) == 0 {
					break
				}
				for _, en := range ents {
					if en.Name != "." && en.Name != ".." {
						got = append(got, en.Name)
						if en.Entry.NodeId == 0 || en.Entry.Attr.Size != uint64(len(en.Name)) {
							t.Fatalf("%s: entry %+v", en.Name, en.Entry)
						}
						if err := e.client.Forget(en.Entry.NodeId, 1); err != nil {
							t.Fatal(err)
						}
					}
					off = en.Off
				}
			}
			sort.Strings(got)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("listed %d names, want %d", len(got), len(want))
			}
		})
	}
}

func TestNoReplyRules(t *testing.T) {
	e := newEnv(t, nil, Options{}, true)
	e.writeFile(t, "f", nil)
	c := e.client
	batch := make([]byte, 8)
	binary.LittleEndian.PutUint32(batch, 1)
	one := make([]byte, 16)
	binary.LittleEndian.PutUint64(one[8:], 1)
	interrupt := make([]byte, 8)
	binary.LittleEndian.PutUint64(interrupt, 12345)
	forget := make([]byte, 8)
	binary.LittleEndian.PutUint64(forget, 1)
	for _, queue := range []int{0, 1} {
		ent, err := e.client.Lookup(1, "f")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.client.Lookup(1, "f"); err != nil {
			t.Fatal(err)
		}
		binary.LittleEndian.PutUint64(one, ent.NodeId)
		for _, req := range [][]byte{
			c.Build(OpForget, ent.NodeId, forget),
			c.Build(OpBatchForget, 0, batch, one),
			c.Build(OpInterrupt, 0, interrupt),
			c.Build(OpForget, 1, nil), // truncated: dropped, still no reply
		} {
			if out := e.raw(t, queue, [][]byte{req}, []int{4096}); len(out) != 0 {
				t.Errorf("queue %d opcode %d: %d-byte reply, want none", queue, binary.LittleEndian.Uint32(req[4:]), len(out))
			}
		}
	}
}

func TestENOSYS(t *testing.T) {
	e := newEnv(t, nil, Options{}, true)
	for _, op := range []uint32{OpSetupMapping, OpRemoveMapping, OpBmap, OpPoll, OpCopyFileRange64, OpSyncfs, 0, 7, 19, 54, 4096, 1 << 31} {
		req := e.client.Build(op, 1, make([]byte, 64))
		if st := status(t, e.raw(t, 1, [][]byte{req}, []int{256})); st != int32(syscall.ENOSYS) {
			t.Errorf("%s: errno %d, want ENOSYS", OpName(op), st)
		}
	}
}

func TestDestroy(t *testing.T) {
	var destroyed atomic.Int32
	e := newEnv(t, nil, Options{OnDestroy: func() { destroyed.Add(1) }}, true)
	if err := e.client.Destroy(); err != nil {
		t.Fatal(err)
	}
	if destroyed.Load() != 1 || e.dev.Session() != nil {
		t.Fatalf("OnDestroy called %d times, session %v", destroyed.Load(), e.dev.Session())
	}
	if _, err := e.client.GetAttr(1); !errors.Is(err, syscall.EIO) {
		t.Fatalf("GETATTR after DESTROY: %v, want EIO", err)
	}
	if _, err := e.client.Init(38, 0, 0); err != nil {
		t.Fatalf("INIT after DESTROY: %v", err)
	}
	if _, err := e.client.GetAttr(1); err != nil {
		t.Fatalf("GETATTR after re-INIT: %v", err)
	}
}

func TestOpsThroughLoopback(t *testing.T) {
	e := newEnv(t, nil, Options{}, true)
	c := e.client
	d, err := c.Mkdir(1, "d", 0o755)
	if err != nil {
		t.Fatal(err)
	}
	co, err := c.Create(d.NodeId, "f", uint32(os.O_RDWR), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(co.NodeId, co.Fh, 0, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Read(co.NodeId, co.Fh, 0, 10); err != nil || string(got) != "abc" {
		t.Fatalf("READ %q, %v", got, err)
	}
	if err := c.Release(co.NodeId, co.Fh); err != nil {
		t.Fatal(err)
	}
	if a, err := c.GetAttr(co.NodeId); err != nil || a.Size != 3 || a.Mode&0o777 != 0o600 {
		t.Fatalf("GETATTR %+v, %v", a, err)
	}
	if _, err := c.StatFs(); err != nil {
		t.Fatal(err)
	}
	if err := c.Unlink(d.NodeId, "f"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Lookup(d.NodeId, "f"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("LOOKUP after UNLINK: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "d", "f")); !os.IsNotExist(err) {
		t.Fatalf("file still there: %v", err)
	}
}

func TestHostileInput(t *testing.T) {
	e := newEnv(t, nil, Options{}, true)
	e.writeFile(t, "f", []byte("data"))
	c := e.client
	ent, err := c.Lookup(1, "f")
	if err != nil {
		t.Fatal(err)
	}
	oo, err := c.Open(ent.NodeId, 0)
	if err != nil {
		t.Fatal(err)
	}
	readIn := func(size uint32) []byte {
		in := fuse.ReadIn{Fh: oo.Fh, Size: size}
		return fuseclient.Bytes(&in)[inHeaderSize:]
	}
	setLen := func(b []byte, n uint32) []byte {
		b = append([]byte(nil), b...)
		binary.LittleEndian.PutUint32(b, n)
		return b
	}
	withExt := func(b []byte, units uint16) []byte {
		b = append([]byte(nil), b...)
		binary.LittleEndian.PutUint16(b[36:], units)
		return b
	}
	lookup := lookupRequest(c, "f")
	writeIn := fuse.WriteIn{Fh: oo.Fh, Size: 100}
	ioctlIn := fuse.IoctlIn{OutSize: 1 << 24}
	tests := []struct {
		name     string
		readable [][]byte
		sizes    []int
		want     int32 // errno; -1 means no reply
	}{
		{"empty chain", nil, []int{4096}, -1},
		{"truncated header", [][]byte{lookup[:39]}, []int{4096}, -1},
		{"header split truncated", [][]byte{lookup[:20], lookup[20:39]}, []int{4096}, -1},
		{"length beyond buffers", [][]byte{setLen(lookup, 4096)}, []int{4096}, int32(syscall.EINVAL)},
		{"length below header", [][]byte{setLen(lookup, 8)}, []int{4096}, int32(syscall.EINVAL)},
		{"length cuts name", [][]byte{setLen(lookup, uint32(len(lookup)-1))}, []int{4096}, int32(syscall.EINVAL)},
		{"name without NUL", [][]byte{c.Build(OpLookup, 1, nil, []byte("f"))}, []int{4096}, int32(syscall.EINVAL)},
		{"empty name", [][]byte{c.Build(OpLookup, 1, nil, []byte{0})}, []int{4096}, int32(syscall.EINVAL)},
		{"name with slash", [][]byte{c.Build(OpLookup, 1, nil, []byte("../etc\x00"))}, []int{4096}, int32(syscall.EINVAL)},
		{"rename without second name", [][]byte{c.Build(OpRename, 1, make([]byte, 8), []byte("f\x00g"))}, []int{4096}, int32(syscall.EINVAL)},
		{"truncated struct", [][]byte{c.Build(OpRead, ent.NodeId, readIn(10)[:20])}, []int{4096}, int32(syscall.EIO)},
		{"read larger than room", [][]byte{c.Build(OpRead, ent.NodeId, readIn(8192))}, []int{16, 4096}, int32(syscall.ERANGE)},
		{"absurd read size", [][]byte{c.Build(OpRead, ent.NodeId, readIn(1<<31))}, []int{4096}, int32(syscall.EINVAL)},
		{"readdirplus larger than room", [][]byte{c.Build(OpReaddirplus, 1, readIn(4096))}, []int{100}, int32(syscall.ERANGE)},
		{"lookup reply larger than room", [][]byte{lookup}, []int{16, 100}, int32(syscall.ERANGE)},
		{"no room for a header", [][]byte{lookup}, []int{15}, -1},
		{"no writable buffers", [][]byte{lookup}, nil, -1},
		{"write size disagrees", [][]byte{c.Build(OpWrite, ent.NodeId, fuseclient.Bytes(&writeIn)[inHeaderSize:], make([]byte, 50))}, []int{4096}, int32(syscall.EINVAL)},
		{"extension longer than payload", [][]byte{withExt(lookup, 100)}, []int{4096}, int32(syscall.EIO)},
		{"getxattr larger than room", [][]byte{c.Build(OpGetxattr, 1, []byte{0, 0, 1, 0, 0, 0, 0, 0}, []byte("user.x\x00"))}, []int{4096}, int32(syscall.ERANGE)},
		{"setxattr value shorter than size", [][]byte{c.Build(OpSetxattr, 1, []byte{100, 0, 0, 0, 0, 0, 0, 0}, []byte("user.x\x00abc"))}, []int{4096}, int32(syscall.EINVAL)},
		{"huge name payload", [][]byte{c.Build(OpLookup, 1, nil, make([]byte, maxNamePayload+1))}, []int{4096}, int32(syscall.EINVAL)},
		{"init minor too old", [][]byte{c.Build(OpInit, 0, []byte{7, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})}, []int{4096}, int32(syscall.EPROTO)},
		{"truncated init", [][]byte{c.Build(OpInit, 0, []byte{7, 0, 0, 0, 38, 0, 0, 0})}, []int{4096}, int32(syscall.EIO)},
		{"absurd getxattr size", [][]byte{c.Build(OpGetxattr, 1, []byte{0, 0, 0, 1, 0, 0, 0, 0}, []byte("user.x\x00"))}, []int{1 << 25}, int32(syscall.EINVAL)},
		{"absurd ioctl out size", [][]byte{c.Build(OpIoctl, 1, fuseclient.Bytes(&ioctlIn)[inHeaderSize:])}, []int{1 << 25}, int32(syscall.EINVAL)},
		{"unknown node", [][]byte{c.Build(OpGetattr, 987654, make([]byte, 16))}, []int{4096}, int32(syscall.EIO)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := e.raw(t, 1, tc.readable, tc.sizes)
			if tc.want < 0 {
				if len(out) != 0 {
					t.Fatalf("%d-byte reply, want none", len(out))
				}
				return
			}
			if st := status(t, out); st != tc.want {
				t.Fatalf("errno %d, want %d", st, tc.want)
			}
			if len(out) != outHeaderSize {
				t.Fatalf("error reply of %d bytes", len(out))
			}
		})
	}
	// The device still serves after all of that.
	if got, err := c.Read(ent.NodeId, oo.Fh, 0, 100); err != nil || string(got) != "data" {
		t.Fatalf("READ after hostile input: %q, %v", got, err)
	}
}

func TestEveryOpcodeSurvivesGarbage(t *testing.T) {
	e := newEnv(t, nil, Options{}, true)
	e.writeFile(t, "f", []byte("x"))
	for op := uint32(0); op < opCount+2; op++ {
		if op == OpDestroy || op == OpInit {
			continue
		}
		for _, n := range []int{0, 8, 40, 200} {
			payload := randomBytes(n, uint64(op))
			req := e.client.Build(op, 1, payload)
			out := e.raw(t, 1, chunks(req, 7), sizesOf(8192, 13))
			if len(out) == 0 {
				continue
			}
			r, err := fuseclient.ParseReply(out)
			if err != nil {
				t.Fatalf("%s with %d bytes: %v", OpName(op), n, err)
			}
			if r.Header.Status > 0 || (r.Header.Status < 0 && len(r.Body) != 0) {
				t.Fatalf("%s: bad reply header %+v", OpName(op), r.Header)
			}
		}
	}
}

func TestSizes(t *testing.T) {
	for op, h := range opTable {
		if h.in > inBufSize || h.out > outBufSize {
			t.Errorf("%s: in %d out %d exceed buffers", OpName(uint32(op)), h.in, h.out)
		}
	}
	if sz[fuse.InitIn]() > inBufSize || int(unsafe.Sizeof(fuse.InitOut{})) != 64 {
		t.Error("InitIn/InitOut sizes")
	}
}

// dataFS answers READ with the given kind of fuse.ReadResultData.
type dataFS struct {
	fuse.RawFileSystem
	data    []byte
	inPlace bool // fill the buffer fusewire offers instead of returning our slice
}

func (d dataFS) Read(_ <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	src := d.data[min(int(in.Offset), len(d.data)):]
	if d.inPlace {
		return fuse.ReadResultData(buf[:copy(buf, src)]), fuse.OK
	}
	return fuse.ReadResultData(src[:min(len(src), int(in.Size))]), fuse.OK
}

func TestReadFallbacks(t *testing.T) {
	data := randomBytes(50000, 4)
	for _, inPlace := range []bool{false, true} {
		e := newEnv(t, func(r fuse.RawFileSystem) fuse.RawFileSystem { return dataFS{r, data, inPlace} }, Options{}, true)
		for _, desc := range []int{0, 1, 4096} { // 0: one data descriptor
			t.Run(fmt.Sprintf("inPlace=%v/desc=%d", inPlace, desc), func(t *testing.T) {
				if desc > 0 {
					e.client.SplitWritable = func(structEnd, total int) []int {
						return append([]int{structEnd}, sizesOf(total-structEnd, desc)...)
					}
				}
				got, err := e.client.Read(1, 0, 100, 40000)
				if err != nil || !bytes.Equal(got, data[100:40100]) {
					t.Fatalf("READ: %d bytes, %v", len(got), err)
				}
				got, err = e.client.Read(1, 0, 49000, 4096)
				if err != nil || !bytes.Equal(got, data[49000:]) {
					t.Fatalf("READ at EOF: %d bytes, %v", len(got), err)
				}
			})
		}
	}
}

func TestXattrs(t *testing.T) {
	e := newEnv(t, nil, Options{}, true)
	e.writeFile(t, "f", nil)
	if err := syscall.Setxattr(filepath.Join(e.dir, "f"), "user.probe", []byte("1"), 0); err != nil {
		testenv.Skipf(t, "no user xattrs here: %v", err)
	}
	ent, err := e.client.Lookup(1, "f")
	if err != nil {
		t.Fatal(err)
	}
	c := e.client
	set := fuse.SetXAttrIn{Size: 5}
	if _, err := c.Call(OpSetxattr, ent.NodeId, fuseclient.Bytes(&set)[inHeaderSize:inHeaderSize+8], []byte("user.k\x00value"), 0, 0); err != nil {
		t.Fatalf("SETXATTR: %v", err)
	}
	get := func(size uint32, name string, split bool) ([]byte, error) {
		if split {
			c.SplitWritable = func(structEnd, total int) []int { return sizesOf(total, 3) }
			defer func() { c.SplitWritable = nil }()
		}
		in := fuse.GetXAttrIn{Size: size}
		return c.Call(OpGetxattr, ent.NodeId, fuseclient.Bytes(&in)[inHeaderSize:], append([]byte(name), 0), 0, max(int(size), 8))
	}
	if b, err := get(0, "user.k", false); err != nil || binary.LittleEndian.Uint32(b) != 5 {
		t.Fatalf("GETXATTR size: %x, %v", b, err)
	}
	for _, split := range []bool{false, true} {
		if b, err := get(100, "user.k", split); err != nil || string(b) != "value" {
			t.Fatalf("GETXATTR (split %v): %q, %v", split, b, err)
		}
	}
	if _, err := get(2, "user.k", false); !errors.Is(err, syscall.ERANGE) {
		t.Fatalf("GETXATTR into 2 bytes: %v, want ERANGE", err)
	}
	if _, err := get(100, "user.missing", false); !errors.Is(err, syscall.ENODATA) {
		t.Fatalf("GETXATTR missing: %v, want ENODATA", err)
	}
	in := fuse.GetXAttrIn{Size: 100}
	b, err := c.Call(OpListxattr, ent.NodeId, fuseclient.Bytes(&in)[inHeaderSize:], nil, 0, 100)
	if err != nil || !bytes.Contains(b, []byte("user.k\x00")) {
		t.Fatalf("LISTXATTR: %q, %v", b, err)
	}
	if _, err := c.Call(OpRemovexattr, ent.NodeId, nil, []byte("user.k\x00"), 0, 0); err != nil {
		t.Fatalf("REMOVEXATTR: %v", err)
	}
}

func TestReaddirAndConcurrentQueues(t *testing.T) {
	e := newEnv(t, nil, Options{RequestQueues: 4}, true)
	for i := range 20 {
		e.writeFile(t, fmt.Sprint("f", i), randomBytes(10000+i, uint64(i)))
	}
	oo, err := e.client.OpenDir(1)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := e.client.ReadDir(1, oo.Fh, 0, 4096)
	if err != nil || len(ents) < 20 {
		t.Fatalf("READDIR: %d entries, %v", len(ents), err)
	}
	if e.dev.NumQueues() != 5 || e.dev.Features() != 0 {
		t.Fatalf("NumQueues %d Features %d", e.dev.NumQueues(), e.dev.Features())
	}
	errs := make(chan error, 8)
	for w := range 8 {
		go func() {
			c := fuseclient.New(sender(e.dev, 1+w%4))
			for i := range 20 {
				name := fmt.Sprint("f", (i+w)%20)
				ent, err := c.Lookup(1, name)
				if err != nil {
					errs <- err
					return
				}
				o, err := c.Open(ent.NodeId, 0)
				if err != nil {
					errs <- err
					return
				}
				got, err := c.Read(ent.NodeId, o.Fh, 0, 1<<16)
				if err != nil || len(got) != int(ent.Attr.Size) {
					errs <- fmt.Errorf("%s: READ %d bytes, %v", name, len(got), err)
					return
				}
				if err := c.Release(ent.NodeId, o.Fh); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// segsFS answers READ with three segments of its file: [off, off+n/2),
// then [0, 10), then [off+n/2, off+n), to check ordering, batching and EOF.
type segsFS struct {
	fuse.RawFileSystem
	fd int
}

func (s segsFS) Read(_ <-chan struct{}, in *fuse.ReadIn, _ []byte) (fuse.ReadResult, fuse.Status) {
	off, n := int64(in.Offset), int(in.Size)-10
	return SegmentsResult([]Segment{{Fd: s.fd, Off: off, Len: n / 2}, {Fd: s.fd, Off: 0, Len: 10}, {Fd: s.fd, Off: off + int64(n/2), Len: n - n/2}}), fuse.OK
}

func TestSegmentsRead(t *testing.T) {
	data := randomBytes(20000, 5)
	p := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e := newEnv(t, func(r fuse.RawFileSystem) fuse.RawFileSystem { return segsFS{r, int(f.Fd())} }, Options{}, true)
	tests := []struct{ desc, off, size int }{
		{1, 100, 3000},   // 3000 one-byte descriptors: several preadv batches
		{4096, 0, 12010}, // page descriptors
		{7, 19000, 4010}, // third segment cut by EOF
		{4096, 30000, 4010},
	}
	for _, tc := range tests {
		e.client.SplitWritable = func(structEnd, total int) []int {
			return append([]int{structEnd}, sizesOf(total-structEnd, tc.desc)...)
		}
		got, err := e.client.Read(1, 0, uint64(tc.off), uint32(tc.size))
		if err != nil {
			t.Fatal(err)
		}
		n := tc.size - 10
		seg := func(off, n int) []byte { return data[min(off, len(data)):min(off+n, len(data))] }
		want := seg(tc.off, n/2)
		if len(want) == n/2 {
			want = append(append(append([]byte{}, want...), data[:10]...), seg(tc.off+n/2, n-n/2)...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%+v: got %d bytes, want %d", tc, len(got), len(want))
		}
	}
}

// vhostDevice is vhostuser's Device interface, repeated to check that
// Device satisfies it without importing vhostuser.
type vhostDevice interface {
	NumQueues() int
	Features() uint64
	HandleChain(ctx context.Context, queue int, c *virtqueue.Chain) uint32
}

var _ vhostDevice = (*Device)(nil)
