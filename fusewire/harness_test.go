package fusewire

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

// canary fills the bytes around every writable buffer, to catch writes past
// the room the guest gave.
const canary = 0xA5

// guestBuffers allocates writable buffers of the given sizes, each with
// canary bytes before and after it in the same backing array.
func guestBuffers(sizes []int) (bufs [][]byte, check func() error) {
	backs := make([][]byte, len(sizes))
	for i, n := range sizes {
		back := bytes.Repeat([]byte{canary}, n+32)
		backs[i] = back
		bufs = append(bufs, back[16:16+n:16+n])
	}
	return bufs, func() error {
		for i, back := range backs {
			n := sizes[i]
			for j, c := range append(append([]byte{}, back[:16]...), back[16+n:]...) {
				if c != canary {
					return fmt.Errorf("buffer %d (size %d): canary byte %d overwritten", i, n, j)
				}
			}
		}
		return nil
	}
}

// sender returns a fuseclient.SendFunc that hands chains to dev on queue
// and fails when the device writes outside the writable buffers.
func sender(dev *Device, queue int) fuseclient.SendFunc {
	return func(readable [][]byte, sizes []int) ([]byte, error) {
		bufs, check := guestBuffers(sizes)
		n := dev.HandleChain(context.Background(), queue, &virtqueue.Chain{Readable: readable, Writable: bufs})
		if err := check(); err != nil {
			return nil, err
		}
		if int(n) > virtqueue.BuffersLen(bufs) {
			return nil, fmt.Errorf("device claims %d bytes written into %d", n, virtqueue.BuffersLen(bufs))
		}
		out := make([]byte, 0, n)
		for _, b := range bufs {
			out = append(out, b...)
		}
		return out[:n], nil
	}
}

type env struct {
	dir    string
	dev    *Device
	client *fuseclient.Client
}

func quietLogger() *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.ErrorLevel)
	return logrus.NewEntry(l)
}

// loopbackFS returns go-fuse's loopback filesystem over dir.
func loopbackFS(t testing.TB, dir string) fuse.RawFileSystem {
	root, err := fs.NewLoopbackRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return fs.NewNodeFS(root, &fs.Options{})
}

// newEnv serves a temp dir through loopback and a device; init says
// whether to negotiate INIT first.
func newEnv(t testing.TB, wrap func(fuse.RawFileSystem) fuse.RawFileSystem, opts Options, init bool) *env {
	dir := t.TempDir()
	rfs := loopbackFS(t, dir)
	if wrap != nil {
		rfs = wrap(rfs)
	}
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	dev := NewDevice(rfs, opts)
	c := fuseclient.New(sender(dev, 1))
	c.Hiprio = sender(dev, 0)
	e := &env{dir: dir, dev: dev, client: c}
	if init {
		if _, err := c.Init(38, 0xb7bfffffb, 128<<10); err != nil {
			t.Fatalf("INIT: %v", err)
		}
	}
	return e
}

func (e *env) writeFile(t testing.TB, name string, data []byte) {
	if err := os.WriteFile(filepath.Join(e.dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// raw sends request bytes split as given with writable sizes, on queue, and
// returns what was written.
func (e *env) raw(t testing.TB, queue int, readable [][]byte, sizes []int) []byte {
	out, err := sender(e.dev, queue)(readable, sizes)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// status parses a reply and returns its errno (0 for success).
func status(t testing.TB, out []byte) int32 {
	t.Helper()
	r, err := fuseclient.ParseReply(out)
	if err != nil {
		t.Fatalf("parse reply %x: %v", out, err)
	}
	return -r.Header.Status
}

// splitAt cuts b at the given offsets.
func splitAt(b []byte, cuts ...int) [][]byte {
	var out [][]byte
	prev := 0
	for _, c := range cuts {
		out = append(out, b[prev:c])
		prev = c
	}
	return append(out, b[prev:])
}

// chunks cuts b into pieces of n bytes.
func chunks(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > n {
		out = append(out, b[:n])
		b = b[n:]
	}
	return append(out, b)
}

// sizesOf cuts total into writable sizes of n.
func sizesOf(total, n int) []int {
	var out []int
	for total > n {
		out = append(out, n)
		total -= n
	}
	return append(out, total)
}
