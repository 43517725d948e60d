package e2e

import (
	"encoding/binary"
	"syscall"
	"testing"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
)

const (
	inHeaderSize  = int(unsafe.Sizeof(fuse.InHeader{}))
	outHeaderSize = int(unsafe.Sizeof(fuse.OutHeader{}))
)

// setLength overwrites the InHeader length field of a built request.
func setLength(req []byte, n uint32) []byte {
	binary.LittleEndian.PutUint32(req, n)
	return req
}

// TestGarbageFUSE sends malformed FUSE requests through real chains, each
// followed by a good request on the same queue, and checks that the
// garbage gets an error (or, where no reply can be written, none) while the
// good requests are served.
func TestGarbageFUSE(t *testing.T) {
	_, dm, _ := sharePassthrough(t, 1)
	g := connectGuest(t, dm, testdriver.QEMU, 1)
	c := g.client(1, testdriver.Layout{})
	g.init(c)
	big, err := c.Lookup(fuse.FUSE_ROOT_ID, "big")
	if err != nil {
		t.Fatal(err)
	}
	op, err := c.Open(big.NodeId, syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	getattr := c.Build(3, fuse.FUSE_ROOT_ID, make([]byte, 16))
	read := func(size uint32) []byte {
		in := fuse.ReadIn{Fh: op.Fh, Size: size}
		return c.Build(15, big.NodeId, fuseclient.Bytes(&in)[inHeaderSize:])
	}
	write := func(size uint32, data []byte) []byte {
		in := fuse.WriteIn{Fh: op.Fh, Size: size}
		return c.Build(16, big.NodeId, fuseclient.Bytes(&in)[inHeaderSize:], data)
	}
	const none = syscall.Errno(0)
	for _, tc := range []struct {
		name     string
		hiprio   bool
		readable [][]byte
		sizes    []int
		layout   testdriver.Layout
		// want is the errno of the reply; noReply means the chain
		// must come back with nothing written.
		want    syscall.Errno
		noReply bool
	}{
		{name: "3-byte request", readable: [][]byte{{1, 2, 3}}, sizes: []int{256}, noReply: true},
		{name: "header cut at 39 bytes", readable: [][]byte{getattr[:39]}, sizes: []int{256}, noReply: true},
		{name: "header cut, 1-byte descriptors", readable: [][]byte{getattr[:20]}, sizes: []int{256}, layout: testdriver.Layout{SegmentSize: 1}, noReply: true},
		{name: "length below the header", readable: [][]byte{setLength(c.Build(3, 1, make([]byte, 16)), 8)}, sizes: []int{256}, want: syscall.EINVAL},
		{name: "length past the chain", readable: [][]byte{setLength(c.Build(3, 1, make([]byte, 16)), 4096)}, sizes: []int{256}, want: syscall.EINVAL},
		{name: "length 0xffffffff", readable: [][]byte{setLength(c.Build(3, 1, make([]byte, 16)), 0xffffffff)}, sizes: []int{256}, want: syscall.EINVAL},
		{name: "unknown opcode 4242", readable: [][]byte{c.Build(4242, 1, nil)}, sizes: []int{256}, want: syscall.ENOSYS},
		{name: "unknown opcode 0", readable: [][]byte{c.Build(0, 1, nil)}, sizes: []int{256}, want: syscall.ENOSYS},
		{name: "SETUPMAPPING (DAX)", readable: [][]byte{c.Build(48, 1, make([]byte, 40))}, sizes: []int{256}, want: syscall.ENOSYS},
		{name: "READ struct truncated", readable: [][]byte{c.Build(15, big.NodeId, make([]byte, 8))}, sizes: []int{4096}, want: syscall.EIO},
		{name: "READ size 0xffffffff", readable: [][]byte{read(0xffffffff)}, sizes: []int{4096}, want: syscall.EINVAL},
		{name: "READ size beyond the reply room", readable: [][]byte{read(1 << 20)}, sizes: []int{16, 4096}, want: syscall.ERANGE},
		{name: "WRITE size beyond its payload", readable: [][]byte{write(1<<30, []byte("abc"))}, sizes: []int{64}, want: syscall.EINVAL},
		{name: "LOOKUP name without NUL", readable: [][]byte{c.Build(1, 1, nil, []byte("big"))}, sizes: []int{256}, want: syscall.EINVAL},
		{name: "LOOKUP name with a slash", readable: [][]byte{c.Build(1, 1, nil, []byte("../etc\x00"))}, sizes: []int{256}, want: syscall.EINVAL},
		{name: "LOOKUP of a 1 MiB name", readable: [][]byte{c.Build(1, 1, nil, make([]byte, 1<<20))}, sizes: []int{256}, want: syscall.EINVAL},
		// virtiofsd answers EBADF for an inode it does not know, too.
		{name: "GETATTR of an unknown node", readable: [][]byte{c.Build(3, 1<<40, make([]byte, 16))}, sizes: []int{256}, want: syscall.EBADF},
		{name: "GETATTR without writable buffers", readable: [][]byte{getattr}, noReply: true},
		{name: "GETATTR with 8 writable bytes", readable: [][]byte{getattr}, sizes: []int{8}, noReply: true},
		{name: "GETATTR with too little room", readable: [][]byte{getattr}, sizes: []int{20}, want: syscall.ERANGE},
		{name: "FORGET of an unknown node", hiprio: true, readable: [][]byte{c.Build(2, 1<<40, make([]byte, 8))}, sizes: []int{64}, noReply: true},
		{name: "BATCH_FORGET count 2^32-1", hiprio: true, readable: [][]byte{c.Build(42, 0, []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, make([]byte, 16))}, sizes: []int{64}, noReply: true},
		{name: "GETATTR on hiprio", hiprio: true, readable: [][]byte{getattr}, sizes: []int{256}, want: none},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := 1
			if tc.hiprio {
				q = 0
			}
			out, err := g.drv.Submit(q, tc.readable, tc.sizes, tc.layout)
			if err != nil {
				t.Fatalf("submit: %v", err)
			}
			switch {
			case tc.noReply:
				if len(out) != 0 {
					t.Fatalf("got a %d-byte reply %x, want none", len(out), out)
				}
			default:
				r, err := fuseclient.ParseReply(out)
				if err != nil {
					t.Fatalf("reply %x: %v", out, err)
				}
				if got := syscall.Errno(-r.Header.Status); got != tc.want {
					t.Fatalf("errno %v (%d), want %v (%d)", got, got, tc.want, tc.want)
				}
			}
			// The next request on the same queue is served.
			if _, err := c.GetAttr(fuse.FUSE_ROOT_ID); err != nil {
				t.Fatalf("GETATTR after: %v", err)
			}
			if b, err := c.Read(big.NodeId, op.Fh, 0, 100); err != nil || len(b) != 100 {
				t.Fatalf("READ after: %d bytes, %v", len(b), err)
			}
		})
	}
}

// TestGarbageAmongGoodRequests keeps garbage and good requests in flight
// together on two request queues: every good one is answered correctly,
// every bad one gets its error or no reply.
func TestGarbageAmongGoodRequests(t *testing.T) {
	_, dm, _ := sharePassthrough(t, 2)
	g := connectGuest(t, dm, testdriver.CloudHypervisor, 2)
	c := g.client(1, testdriver.Layout{})
	g.init(c)
	small, err := c.Lookup(fuse.FUSE_ROOT_ID, "small")
	if err != nil {
		t.Fatal(err)
	}
	getattr := c.Build(3, small.NodeId, make([]byte, 16))
	type req struct {
		readable [][]byte
		layout   testdriver.Layout
		want     syscall.Errno
		noReply  bool
	}
	kinds := []req{
		{[][]byte{getattr}, testdriver.Layout{SegmentSize: 7}, 0, false},
		{[][]byte{getattr[:30]}, testdriver.Layout{SegmentSize: 1}, 0, true},
		{[][]byte{c.Build(9999, 1, nil)}, testdriver.Layout{}, syscall.ENOSYS, false},
		{[][]byte{setLength(c.Build(3, 1, make([]byte, 16)), 1<<31)}, testdriver.Layout{Indirect: true}, syscall.EINVAL, false},
		{[][]byte{getattr}, testdriver.Layout{Indirect: true, SegmentSize: 4}, 0, false},
	}
	const total = 200
	pend := make([]*testdriver.Pending, total)
	for i := range pend {
		k := kinds[i%len(kinds)]
		p, err := g.drv.Start(1+i%2, k.readable, []int{256}, k.layout)
		if err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		pend[i] = p
	}
	for i, p := range pend {
		k := kinds[i%len(kinds)]
		out, err := p.Wait()
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if k.noReply {
			if len(out) != 0 {
				t.Fatalf("request %d: %d-byte reply, want none", i, len(out))
			}
			continue
		}
		r, err := fuseclient.ParseReply(out)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got := syscall.Errno(-r.Header.Status); got != k.want {
			t.Fatalf("request %d: errno %v, want %v", i, got, k.want)
		}
		if k.want == 0 {
			a := fuse.AttrOut{}
			copy(fuseclient.Bytes(&a), r.Body)
			if len(r.Body) != int(unsafe.Sizeof(a)) || a.Attr.Size != uint64(len("hello, guest\n")) {
				t.Fatalf("request %d: GETATTR body of %d bytes, size %d", i, len(r.Body), a.Attr.Size)
			}
		}
	}
}
