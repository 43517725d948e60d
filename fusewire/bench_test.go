package fusewire

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

const (
	benchFile = 8 << 20
	benchRead = 1 << 20
)

// segmentsFS serves every READ as a FileResult on fd (the zero-copy path
// passthrough and the blob cache use).
type segmentsFS struct {
	fuse.RawFileSystem
	fd int
}

func (s segmentsFS) Read(_ <-chan struct{}, in *fuse.ReadIn, _ []byte) (fuse.ReadResult, fuse.Status) {
	return FileResult(s.fd, int64(in.Offset), int(in.Size)), fuse.OK
}

// benchReader returns a function doing one 1 MiB READ at off through a
// device, into a "guest" buffer of OutHeader plus 256 page-sized
// descriptors.
func benchReader(b *testing.B, dev *Device, nodeid, fh uint64) func(off int64) {
	c := fuseclient.New(nil)
	// Guest RAM: page-aligned pages, as a guest's page cache gives.
	guest := anonMemory(b, 4096+benchRead)
	writable := [][]byte{guest[:outHeaderSize]}
	for p := 4096; p < len(guest); p += 4096 {
		writable = append(writable, guest[p:p+4096])
	}
	ctx := context.Background()
	return func(off int64) {
		in := fuse.ReadIn{Fh: fh, Offset: uint64(off), Size: benchRead}
		req := c.Build(OpRead, nodeid, fuseclient.Bytes(&in)[inHeaderSize:])
		n := dev.HandleChain(ctx, 1, &virtqueue.Chain{Readable: [][]byte{req[:inHeaderSize], req[inHeaderSize:]}, Writable: writable})
		if int(n) != outHeaderSize+benchRead {
			b.Fatalf("READ wrote %d bytes", n)
		}
	}
}

// anonMemory maps n bytes of page-aligned anonymous memory.
func anonMemory(b *testing.B, n int) []byte {
	m, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Munmap(m) })
	return m
}

type benchSetup struct {
	file     *os.File
	loopback func(off int64)
	segments func(off int64)
	pread    func(off int64)
	// preadv is the kernel's share of the segments path: preadv into 256
	// page iovecs, without fusewire.
	preadv func(off int64)
}

func newBenchSetup(b *testing.B) *benchSetup {
	e := newEnv(b, nil, Options{}, true)
	e.writeFile(b, "big", randomBytes(benchFile, 3))
	f, err := os.Open(filepath.Join(e.dir, "big"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	ent, err := e.client.Lookup(1, "big")
	if err != nil {
		b.Fatal(err)
	}
	oo, err := e.client.Open(ent.NodeId, 0)
	if err != nil {
		b.Fatal(err)
	}
	seg := newEnv(b, func(r fuse.RawFileSystem) fuse.RawFileSystem { return segmentsFS{r, int(f.Fd())} }, Options{}, true)
	// pread's buffer is the same kind of memory as the guest's.
	buf := anonMemory(b, benchRead)
	pages := anonMemory(b, benchRead)
	var iov [][]byte
	for p := 0; p < benchRead; p += 4096 {
		iov = append(iov, pages[p:p+4096])
	}
	s := &benchSetup{
		file:     f,
		loopback: benchReader(b, e.dev, ent.NodeId, oo.Fh),
		segments: benchReader(b, seg.dev, 1, 0),
		pread: func(off int64) {
			if n, err := unix.Pread(int(f.Fd()), buf, off); n != benchRead || err != nil {
				b.Fatalf("pread: %d, %v", n, err)
			}
		},
		preadv: func(off int64) {
			if n, err := unix.Preadv(int(f.Fd()), iov, off); n != benchRead || err != nil {
				b.Fatalf("preadv: %d, %v", n, err)
			}
		},
	}
	// Warm the page cache.
	for off := int64(0); off < benchFile; off += benchRead {
		s.pread(off)
	}
	return s
}

// BenchmarkRead1MiB reads 1 MiB from a file in the page cache: through
// fusewire with the filesystem returning a FileResult (segments) or
// go-fuse's loopback (ReadResultFd), and with plain pread into a buffer.
func BenchmarkRead1MiB(b *testing.B) {
	s := newBenchSetup(b)
	for _, bc := range []struct {
		name string
		read func(off int64)
	}{{"segments", s.segments}, {"loopback", s.loopback}, {"pread", s.pread}, {"preadv", s.preadv}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(benchRead)
			off := int64(0)
			for b.Loop() {
				bc.read(off)
				off = (off + benchRead) % benchFile
			}
		})
	}
}

// BenchmarkRead1MiBRatio alternates fusewire (segments path) and pread
// reads of the same file and reports fusewire's throughput as a fraction
// of pread's (x-pread; the target is ≥ 0.8).
func BenchmarkRead1MiBRatio(b *testing.B) {
	s := newBenchSetup(b)
	var tf, tp time.Duration
	off := int64(0)
	b.SetBytes(2 * benchRead)
	for b.Loop() {
		t0 := time.Now()
		s.segments(off)
		t1 := time.Now()
		s.pread((off + benchFile/2) % benchFile) // other bytes: no help from CPU caches
		tp += time.Since(t1)
		tf += t1.Sub(t0)
		off = (off + benchRead) % benchFile
	}
	b.ReportMetric(float64(tp)/float64(tf), "x-pread")
}

// BenchmarkGetattr measures one GETATTR of the root through fusewire and
// go-fuse's loopback, in-process (no transport).
func BenchmarkGetattr(b *testing.B) {
	e := newEnv(b, nil, Options{}, true)
	c := fuseclient.New(nil)
	in := fuse.GetAttrIn{}
	req := c.Build(OpGetattr, 1, fuseclient.Bytes(&in)[inHeaderSize:])
	reply := make([]byte, outHeaderSize+sz[fuse.AttrOut]())
	chain := &virtqueue.Chain{Readable: [][]byte{req}, Writable: [][]byte{reply}}
	ctx := context.Background()
	for b.Loop() {
		if n := e.dev.HandleChain(ctx, 1, chain); int(n) != len(reply) {
			b.Fatalf("GETATTR wrote %d bytes", n)
		}
	}
}
