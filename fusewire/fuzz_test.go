package fusewire

import (
	"context"
	"encoding/binary"
	"io"
	"log"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

// safeFS is loopback without the calls a random request could turn into
// unbounded work on the host (FALLOCATE and COPY_FILE_RANGE of huge
// ranges) or a wait that never ends (SETLKW), and without Forget: go-fuse's
// NodeFS panics while holding an inode lock when a FORGET exceeds the
// lookup count, and later requests on that inode then hang. The fuzzer
// tests framing, not those (forget routing is tested in TestNoReplyRules).
type safeFS struct{ fuse.RawFileSystem }

func (safeFS) Forget(uint64, uint64) {}

func (safeFS) Fallocate(<-chan struct{}, *fuse.FallocateIn) fuse.Status { return fuse.ENOSYS }
func (safeFS) SetLkw(<-chan struct{}, *fuse.LkIn) fuse.Status           { return fuse.ENOSYS }
func (safeFS) CopyFileRange(<-chan struct{}, *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	return 0, fuse.ENOSYS
}

// seedRequests returns real requests: INIT, LOOKUP, OPEN, READ, WRITE,
// READDIRPLUS, GETXATTR, FORGET, BATCH_FORGET.
func seedRequests() [][]byte {
	c := fuseclient.New(nil)
	init := fuse.InitIn{Major: 7, Minor: 38, MaxReadAhead: 128 << 10, Flags: 0x7bfffffb | capInitExt, Flags2: 0xb}
	read := fuse.ReadIn{Fh: 1, Offset: 4096, Size: 8192}
	write := fuse.WriteIn{Fh: 1, Offset: 3, Size: 10}
	open := fuse.OpenIn{}
	forget := fuse.ForgetIn{Nlookup: 1}
	batch := []byte{2, 0, 0, 0, 0, 0, 0, 0}
	entries := make([]byte, 32)
	binary.LittleEndian.PutUint64(entries, 2)
	binary.LittleEndian.PutUint64(entries[8:], 1)
	binary.LittleEndian.PutUint64(entries[16:], 3)
	binary.LittleEndian.PutUint64(entries[24:], 1)
	after := func(b []byte) []byte { return b[inHeaderSize:] }
	return [][]byte{
		c.Build(OpInit, 0, after(fuseclient.Bytes(&init))),
		c.Build(OpLookup, 1, nil, []byte("file\x00")),
		c.Build(OpOpen, 2, after(fuseclient.Bytes(&open))),
		c.Build(OpRead, 2, after(fuseclient.Bytes(&read))),
		c.Build(OpWrite, 2, after(fuseclient.Bytes(&write)), []byte("0123456789")),
		c.Build(OpReaddirplus, 1, after(fuseclient.Bytes(&read))),
		c.Build(OpGetxattr, 1, []byte{0, 1, 0, 0, 0, 0, 0, 0}, []byte("user.a\x00")),
		c.Build(OpForget, 2, after(fuseclient.Bytes(&forget))),
		c.Build(OpBatchForget, 0, batch, entries),
	}
}

// cutBy splits b into pieces whose lengths are the bytes of cuts (0 means
// an empty descriptor); the rest goes in a last piece.
func cutBy(b, cuts []byte) [][]byte {
	var out [][]byte
	for _, c := range cuts {
		n := min(int(c), len(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

func FuzzFraming(f *testing.F) {
	for i, req := range seedRequests() {
		f.Add(req, []byte{byte(i * 7), 1, 40}, []byte{1, 255, 3}, uint8(i%2))
	}
	old := log.Writer()
	log.SetOutput(io.Discard) // go-fuse's NodeFS logs before it panics on unknown nodes
	f.Cleanup(func() { log.SetOutput(old) })
	e := newEnv(f, func(r fuse.RawFileSystem) fuse.RawFileSystem { return safeFS{r} }, Options{}, true)
	e.writeFile(f, "file", []byte("some file content"))
	f.Fuzz(func(t *testing.T, req, cuts, room []byte, queue uint8) {
		if len(cuts) > 64 || len(room) > 64 {
			return
		}
		sizes := make([]int, len(room))
		for i, r := range room {
			sizes[i] = int(r) * 17 % 4097
		}
		bufs, check := guestBuffers(sizes)
		n := int(e.dev.HandleChain(context.Background(), int(queue%3), &virtqueue.Chain{Readable: cutBy(req, cuts), Writable: bufs}))
		if err := check(); err != nil {
			t.Fatal(err)
		}
		if n > virtqueue.BuffersLen(bufs) {
			t.Fatalf("%d bytes written into %d", n, virtqueue.BuffersLen(bufs))
		}
		if n == 0 {
			return
		}
		out := make([]byte, 0, n)
		for _, b := range bufs {
			out = append(out, b...)
		}
		r, err := fuseclient.ParseReply(out[:n])
		if err != nil {
			t.Fatal(err)
		}
		if r.Header.Unique != binary.LittleEndian.Uint64(req[8:]) {
			t.Fatalf("reply unique %d", r.Header.Unique)
		}
		if r.Header.Status > 0 || r.Header.Status < -4095 || (r.Header.Status != 0 && len(r.Body) > 0) {
			t.Fatalf("bad reply header %+v with %d bytes", r.Header, len(r.Body))
		}
		if e.dev.Session() == nil {
			// The fuzzer sent DESTROY: start a new session.
			if _, err := fuseclient.New(sender(e.dev, 1)).Init(38, 0xb7bfffffb, 128<<10); err != nil {
				t.Fatal(err)
			}
		}
	})
}
