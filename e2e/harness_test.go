package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
)

// linuxInitFlags are the INIT capability flags a Linux 6.x virtio-fs guest
// sends (bits 32-63 go in flags2), as fusewire's own tests use them.
const linuxInitFlags = 0xb7bfffffb

// queueSize is the ring size of every queue: large enough for a 1 MiB READ
// in 4 KiB descriptors, or a few hundred 1-byte ones.
const queueSize = 1024

var sequences = []testdriver.Sequence{testdriver.QEMU, testdriver.CloudHypervisor}

// layout is a way of cutting requests into descriptors, with the largest
// READ it can carry within one chain of queueSize descriptors (the request
// itself is split too: 80 bytes of READ header are 80 descriptors of 1
// byte).
type layout struct {
	name     string
	lay      testdriver.Layout
	maxChunk int
}

var layouts = []layout{
	{"flat", testdriver.Layout{}, 1 << 20},
	{"1B", testdriver.Layout{SegmentSize: 1}, 600},
	{"7B", testdriver.Layout{SegmentSize: 7}, 7 * 600},
	{"4KiB", testdriver.Layout{SegmentSize: 4096}, 1 << 20},
	{"1B-indirect", testdriver.Layout{SegmentSize: 1, Indirect: true}, 600},
	{"4KiB-indirect", testdriver.Layout{SegmentSize: 4096, Indirect: true}, 1 << 20},
}

func quietLogger() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// daemon is vhostuser.Serve running a fusewire.Device on a socket.
type daemon struct {
	sock string
	dev  *fusewire.Device
}

// startDaemon serves fs with the given number of request queues, and
// workers per queue (0: vhostuser's default; -1: inline in the kick loop),
// until the test ends. Serve must return cleanly (nil) once the driver has
// gone.
func startDaemon(t testing.TB, fs fuse.RawFileSystem, queues, workers int) *daemon {
	t.Helper()
	return startWrapped(t, fs, queues, workers, nil)
}

// startWrapped is startDaemon with the device seen by vhostuser wrapped by
// wrap (nil: not wrapped).
func startWrapped(t testing.TB, fs fuse.RawFileSystem, queues, workers int, wrap func(*fusewire.Device) vhostuser.Device) *daemon {
	t.Helper()
	return startObserved(t, fs, queues, workers, wrap, nil)
}

// startObserved is startWrapped with obs as the device's Observer.
func startObserved(t testing.TB, fs fuse.RawFileSystem, queues, workers int, wrap func(*fusewire.Device) vhostuser.Device, obs fusewire.Observer) *daemon {
	t.Helper()
	// Not t.TempDir(): sub-test names make paths longer than sun_path.
	dir, err := os.MkdirTemp("", "e2e-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "vfsd.sock")
	l, err := vhostuser.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	dev := fusewire.NewDevice(fs, fusewire.Options{RequestQueues: queues, Logger: quietLogger(), Observer: obs})
	var served vhostuser.Device = dev
	if wrap != nil {
		served = wrap(dev)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- vhostuser.Serve(ctx, l, served, vhostuser.Options{RequestQueues: queues, Workers: workers, Logger: quietLogger(),
			PollBeforeSleep: pollBeforeSleep(t), KickWait: kickWait()})
	}()
	t.Cleanup(func() {
		// The driver's Close (registered later, run earlier) has
		// disconnected: Serve returns on its own.
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after the frontend disconnected")
		}
		cancel()
	})
	return &daemon{sock: sock, dev: dev}
}

// guest is a connected testdriver.
type guest struct {
	t   testing.TB
	drv *testdriver.Driver
	dev *fusewire.Device
}

// connectGuest connects a driver in seq's order to dm with the given number
// of request queues.
func connectGuest(t testing.TB, dm *daemon, seq testdriver.Sequence, queues int) *guest {
	t.Helper()
	return connectGuestOpts(t, dm, guestOpts(seq, queues))
}

// guestOpts are connectGuest's driver options: queues request queues,
// queueSize descriptors each, 64 MiB of RAM.
func guestOpts(seq testdriver.Sequence, queues int) testdriver.Options {
	return testdriver.Options{
		Sequence:      seq,
		RequestQueues: queues,
		QueueSize:     queueSize,
		MemRegions:    []uint64{64 << 20},
	}
}

// connectGuestOpts connects a driver with opts.
func connectGuestOpts(t testing.TB, dm *daemon, opts testdriver.Options) *guest {
	t.Helper()
	d, err := testdriver.Connect(dm.sock, opts)
	if err != nil {
		t.Fatalf("connect (%v): %v", opts.Sequence, err)
	}
	t.Cleanup(func() { d.Close() })
	return &guest{t: t, drv: d, dev: dm.dev}
}

// client returns a FUSE client sending on request queue q with layout l;
// FORGETs go to the hiprio queue 0 with the same layout.
func (g *guest) client(q int, l testdriver.Layout) *fuseclient.Client {
	send := func(queue int) fuseclient.SendFunc {
		return func(readable [][]byte, sizes []int) ([]byte, error) {
			return g.drv.Submit(queue, readable, sizes, l)
		}
	}
	c := fuseclient.New(send(q))
	c.Hiprio = send(0)
	c.Caller.Uid = uint32(os.Getuid())
	c.Caller.Gid = uint32(os.Getgid())
	return c
}

// init sends INIT as a Linux guest and checks the answer.
func (g *guest) init(c *fuseclient.Client) *fuse.InitOut {
	g.t.Helper()
	out, err := c.Init(38, linuxInitFlags, 128<<10)
	if err != nil {
		g.t.Fatalf("INIT: %v", err)
	}
	if out.Major != 7 || out.MaxWrite == 0 || out.MaxPages == 0 {
		g.t.Fatalf("INIT reply: %+v", out)
	}
	if g.dev.Session() == nil {
		g.t.Fatal("no session after INIT")
	}
	return out
}

// destroy sends DESTROY and checks the session is gone.
func (g *guest) destroy(c *fuseclient.Client) {
	g.t.Helper()
	if err := c.Destroy(); err != nil {
		g.t.Fatalf("DESTROY: %v", err)
	}
	if g.dev.Session() != nil {
		g.t.Fatal("session still there after DESTROY")
	}
}

// lookupPath looks every component of p up from the root and returns the
// final entry.
func lookupPath(c *fuseclient.Client, p string) (*fuse.EntryOut, error) {
	e := &fuse.EntryOut{NodeId: fuse.FUSE_ROOT_ID}
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if part == "" {
			continue
		}
		next, err := c.Lookup(e.NodeId, part)
		if err != nil {
			return nil, fmt.Errorf("lookup %q in %s: %w", part, p, err)
		}
		e = next
	}
	return e, nil
}

// readRange reads n bytes at off in READs of at most chunk bytes, stopping
// at end of file.
func readRange(c *fuseclient.Client, node, fh uint64, off int64, n, chunk int) ([]byte, error) {
	var out []byte
	for len(out) < n {
		want := min(chunk, n-len(out))
		b, err := c.Read(node, fh, uint64(off)+uint64(len(out)), uint32(want))
		if err != nil {
			return nil, fmt.Errorf("read %d at %d: %w", want, off+int64(len(out)), err)
		}
		if len(b) > want {
			return nil, fmt.Errorf("read %d at %d returned %d bytes", want, off+int64(len(out)), len(b))
		}
		out = append(out, b...)
		if len(b) < want {
			break
		}
	}
	return out, nil
}

// checkWindows reads windows of data (the whole file as the host has it)
// through c with READs of at most chunk bytes: the start, a page boundary,
// a 1 MiB boundary (a RAFS chunk), and the tail, where the read is short.
func checkWindows(t *testing.T, c *fuseclient.Client, node, fh uint64, data []byte, chunk int) {
	t.Helper()
	size := int64(len(data))
	var offs []int64
	for _, o := range []int64{0, 4096 - 3, 1<<20 - 5, size - int64(chunk)/2} {
		if o >= 0 && o < size {
			offs = append(offs, o)
		}
	}
	for _, off := range offs {
		n := chunk
		got, err := readRange(c, node, fh, off, n, chunk)
		if err != nil {
			t.Fatal(err)
		}
		want := data[off:min(size, off+int64(n))]
		if !bytes.Equal(got, want) {
			t.Fatalf("read %d at %d: %d bytes differ from the file's %d", n, off, len(got), len(want))
		}
	}
}

// readDirPlusAll lists a directory with READDIRPLUS in buffers of size
// bytes until an empty reply.
func readDirPlusAll(c *fuseclient.Client, node uint64, size uint32) ([]fuseclient.DirEntry, error) {
	od, err := c.OpenDir(node)
	if err != nil {
		return nil, fmt.Errorf("opendir %d: %w", node, err)
	}
	var all []fuseclient.DirEntry
	off := uint64(0)
	for {
		es, err := c.ReadDirPlus(node, od.Fh, off, size)
		if err != nil {
			return nil, fmt.Errorf("readdirplus %d at %d: %w", node, off, err)
		}
		if len(es) == 0 {
			break
		}
		all = append(all, es...)
		off = es[len(es)-1].Off
	}
	if err := c.ReleaseDir(node, od.Fh); err != nil {
		return nil, fmt.Errorf("releasedir %d: %w", node, err)
	}
	return all, nil
}

// errnoOf returns the errno in err (0 if none).
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

// readCounter wraps a filesystem and counts its successful READ results by
// kind: fusewire.SegmentedResult (copied with preadv straight into guest
// memory) or anything else (copied through a buffer).
type readCounter struct {
	fuse.RawFileSystem
	segmented, other atomic.Int64
}

func (r *readCounter) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	res, st := r.RawFileSystem.Read(cancel, in, buf)
	if st.Ok() && res != nil {
		if _, ok := res.(fusewire.SegmentedResult); ok {
			r.segmented.Add(1)
		} else {
			r.other.Add(1)
		}
	}
	return res, st
}

// fixturesDir is where the repository keeps the real RAFS images (copied
// unmodified from the shared fixtures; see its PROVENANCE.md).
const fixturesDir = "../rafs/testdata/fixtures"

// EnvPoll names the environment variable that sets the daemons'
// vhostuser.Options.PollBeforeSleep in these tests (a Go duration, "0" for
// no polling), to compare settings in the same benchmark run. Unset, the
// daemons poll as nydus-virtiofsd does by default
// (vhostuser.RecommendedPollBeforeSleep): a benchmark here measures the
// daemon as it ships unless told otherwise.
const EnvPoll = "NVFS_POLL_BEFORE_SLEEP"

// EnvKickWait names the environment variable that sets the daemons'
// vhostuser.Options.KickWait in these tests ("poller", "ppoll", "inline" or
// "inline-ppoll"). Unset, they wait as nydus-virtiofsd does by default
// (vhostuser.RecommendedKickWait).
const EnvKickWait = "NVFS_KICK_WAIT"

func pollBeforeSleep(t testing.TB) time.Duration {
	v := os.Getenv(EnvPoll)
	if v == "" {
		return vhostuser.RecommendedPollBeforeSleep
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s: %v", EnvPoll, err)
	}
	return d
}

func kickWait() vhostuser.KickWait {
	if v := os.Getenv(EnvKickWait); v != "" {
		return vhostuser.KickWait(v)
	}
	return vhostuser.RecommendedKickWait
}
