package metrics

import (
	"context"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/sdk/trace"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/fsapi"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

const (
	benchFile = 8 << 20
	benchRead = 1 << 20
)

// benchFS answers GETATTR at once and READ with a file-segment result on
// a file in the page cache (the zero-copy path of passthrough and the
// blob cache).
type benchFS struct {
	fuse.RawFileSystem
	fd int
}

func (f benchFS) GetAttr(_ <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	out.Ino, out.Mode, out.Nlink = in.NodeId, fuse.S_IFREG|0o644, 1
	return fuse.OK
}

func (f benchFS) Read(_ <-chan struct{}, in *fuse.ReadIn, _ []byte) (fuse.ReadResult, fuse.Status) {
	return fsapi.FileResult(f.fd, int64(in.Offset), int(in.Size)), fuse.OK
}

// benchDevice is a device served by HandleChain directly (no vhost-user),
// with guest memory for a 1 MiB READ reply in page-sized descriptors.
type benchDevice struct {
	dev      *fusewire.Device
	writable [][]byte
	getattr  [][]byte
	read     [][]byte
}

func newBenchDevice(b *testing.B, fd int, mode string) *benchDevice {
	var fs fuse.RawFileSystem = benchFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), fd: fd}
	l := logrus.New()
	l.SetOutput(io.Discard) // info level: request logs are built only when slow
	opts := fusewire.Options{Logger: logrus.NewEntry(l)}
	switch mode {
	case "on", "traced":
		to := TransportOptions{MeasureLatency: true, Logger: opts.Logger, SlowThreshold: 1 << 62}
		if mode == "traced" {
			tp := trace.NewTracerProvider()
			b.Cleanup(func() { tp.Shutdown(context.Background()) })
			to.Tracer, to.SampleEvery = tp.Tracer("bench"), math.MaxUint64
		}
		d := NewDaemon(Options{Defaults: Settings{MeasureLatency: true}, Transport: to})
		fs = Wrap(fs, d.Mount("/"))
		opts.Observer = d.Transport
	}
	bd := &benchDevice{dev: fusewire.NewDevice(fs, opts)}
	c := fuseclient.New(func(readable [][]byte, sizes []int) ([]byte, error) {
		var w [][]byte
		for _, n := range sizes {
			w = append(w, make([]byte, n))
		}
		n := bd.dev.HandleChain(context.Background(), 1, &virtqueue.Chain{Readable: readable, Writable: w})
		var out []byte
		for _, x := range w {
			out = append(out, x...)
		}
		return out[:n], nil
	})
	if _, err := c.Init(38, 0, 128<<10); err != nil {
		b.Fatal(err)
	}
	guest, err := unix.Mmap(-1, 0, 4096+benchRead, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Munmap(guest) })
	bd.writable = [][]byte{guest[:16]}
	for p := 4096; p < len(guest); p += 4096 {
		bd.writable = append(bd.writable, guest[p:p+4096])
	}
	ga := c.Build(fusewire.OpGetattr, 2, make([]byte, 16))
	bd.getattr = [][]byte{ga[:40], ga[40:]}
	in := fuse.ReadIn{Size: benchRead}
	rd := c.Build(fusewire.OpRead, 2, fuseclient.Bytes(&in)[40:])
	bd.read = [][]byte{rd[:40], rd[40:]}
	return bd
}

// getattrRoom is the reply room of GETATTR: OutHeader and AttrOut.
var getattrRoom = [][]byte{make([]byte, 16+104)}

func benchFileFd(b *testing.B) int {
	p := filepath.Join(b.TempDir(), "big")
	data := make([]byte, benchFile)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

// BenchmarkOverhead is a GETATTR round trip and a 1 MiB READ (file
// segments, page cache) through fusewire with the counters off, on (the
// default: transport observer, nydusd's per-mount counters, latency
// measured) and on with a tracer configured that samples nothing.
func BenchmarkOverhead(b *testing.B) {
	fd := benchFileFd(b)
	for _, op := range []string{"getattr", "read1MiB"} {
		for _, mode := range []string{"off", "on", "traced"} {
			b.Run(op+"/"+mode, func(b *testing.B) {
				d := newBenchDevice(b, fd, mode)
				ctx := context.Background()
				switch op {
				case "getattr":
					for b.Loop() {
						if n := d.dev.HandleChain(ctx, 1, &virtqueue.Chain{Readable: d.getattr, Writable: getattrRoom}); n != 16+104 {
							b.Fatalf("GETATTR wrote %d bytes", n)
						}
					}
				case "read1MiB":
					b.SetBytes(benchRead)
					for b.Loop() {
						if n := d.dev.HandleChain(ctx, 1, &virtqueue.Chain{Readable: d.read, Writable: d.writable}); n != 16+benchRead {
							b.Fatalf("READ wrote %d bytes", n)
						}
					}
				}
			})
		}
	}
}
