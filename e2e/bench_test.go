package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/passthrough"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

const (
	benchFileSize = 64 << 20
	readSize      = 1 << 20
)

// rawRead is a READ request laid out once in guest RAM, as a Linux guest
// does for a 1 MiB read: the request in one readable descriptor, OutHeader
// in one writable descriptor, and the data in writable descriptors of
// segment bytes (the guest's page-cache pages), optionally in an indirect
// table. The pages are adjacent in guest RAM in chain order (the daemon
// merges them into one buffer), or laid out last to first (reversed), so
// that no two consecutive ones are adjacent and each stays an iovec of its
// own. Each round trip only rewrites the offset.
type rawRead struct {
	drv    *testdriver.Driver
	c      *fuseclient.Client
	node   uint64
	fh     uint64
	reqGPA uint64
	data   uint64
	descs  []testdriver.Desc
	pages  []uint64 // guest-physical address of each data descriptor, in chain order
	req    []byte
}

func newRawRead(b *testing.B, g *guest, c *fuseclient.Client, node, fh uint64, segment int, indirect, reversed bool) *rawRead {
	r := &rawRead{drv: g.drv, c: c, node: node, fh: fh}
	r.req = r.build(0)
	var err error
	if r.reqGPA, err = g.drv.Alloc(len(r.req)); err != nil {
		b.Fatal(err)
	}
	g.drv.WriteGuest(r.reqGPA, r.req)
	out, err := g.drv.Alloc(outHeaderSize)
	if err != nil {
		b.Fatal(err)
	}
	if r.data, err = g.drv.Alloc(readSize); err != nil {
		b.Fatal(err)
	}
	chain := []testdriver.Desc{
		{Addr: r.reqGPA, Len: uint32(len(r.req))},
		{Addr: out, Len: uint32(outHeaderSize), Flags: testdriver.FlagWrite},
	}
	for off := 0; off < readSize; off += segment {
		gpa := r.data + uint64(off)
		if reversed {
			gpa = r.data + uint64(readSize-segment-off)
		}
		r.pages = append(r.pages, gpa)
		chain = append(chain, testdriver.Desc{Addr: gpa, Len: uint32(segment), Flags: testdriver.FlagWrite})
	}
	for i := range len(chain) - 1 {
		chain[i].Flags |= testdriver.FlagNext
		chain[i].Next = uint16(i + 1)
	}
	if !indirect {
		r.descs = chain
		return r
	}
	table := make([]byte, 16*len(chain))
	for i, d := range chain {
		testdriver.PutDesc(table, i, d)
	}
	tgpa, err := g.drv.Alloc(len(table))
	if err != nil {
		b.Fatal(err)
	}
	g.drv.WriteGuest(tgpa, table)
	r.descs = []testdriver.Desc{{Addr: tgpa, Len: uint32(len(table)), Flags: testdriver.FlagIndirect, Next: 0xffff}}
	return r
}

func (r *rawRead) build(off uint64) []byte {
	in := fuse.ReadIn{Fh: r.fh, Offset: off, Size: readSize}
	return r.c.Build(15, r.node, fuseclient.Bytes(&in)[inHeaderSize:])
}

// read does one READ of 1 MiB at off and checks the reply length.
func (r *rawRead) read(off uint64) error {
	in := fuse.ReadIn{Fh: r.fh, Offset: off, Size: readSize}
	r.drv.WriteGuest(r.reqGPA+uint64(inHeaderSize), fuseclient.Bytes(&in)[inHeaderSize:])
	p, err := r.drv.StartRaw(1, r.descs)
	if err != nil {
		return err
	}
	if _, err := p.Wait(); err != nil {
		return err
	}
	if n := p.Len(); n != uint32(outHeaderSize+readSize) {
		return fmt.Errorf("READ at %d: %d bytes written, want %d", off, n, outHeaderSize+readSize)
	}
	return nil
}

// bigFile writes a 64 MiB file and reads it once so that it sits in the
// page cache.
func bigFile(b *testing.B) string {
	path := filepath.Join(b.TempDir(), "big")
	if err := os.WriteFile(path, randomBytes(3, benchFileSize), 0o644); err != nil {
		b.Fatal(err)
	}
	if _, err := os.ReadFile(path); err != nil {
		b.Fatal(err)
	}
	return path
}

// shareFS shares dir through passthrough.
func shareFS(b *testing.B, dir string) fuse.RawFileSystem {
	fs, err := passthrough.New(dir, passthrough.Options{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	return fs
}

// serveDir serves dir through passthrough with the default workers.
func serveDir(b *testing.B, dir string, queues int) (*daemon, fuse.RawFileSystem) {
	fs := shareFS(b, dir)
	return startDaemon(b, fs, queues, 0), fs
}

// kvmHaltPoll is x86 KVM's default halt_poll_ns: how long a vCPU that goes
// idle polls for an interrupt before its host thread sleeps.
const kvmHaltPoll = 200 * time.Microsecond

// BenchmarkSequentialRead reads a 64 MiB page-cached file in 1 MiB READs
// through the whole path (kick → chain → dispatch → preadv into guest RAM →
// used ring → call), one READ in flight, and in the same loop preads the
// file into a 1 MiB buffer, sweeping the same 64 MiB half a file apart. It
// reports both throughputs (from the median time of one 1 MiB read) and
// their ratio (target ≥ 0.8). The data descriptors are one 1 MiB buffer, or
// 4 KiB pages in an indirect table as a Linux guest sends them, adjacent in
// guest RAM or reversed (see rawRead).
//
// It also splits the READ's median time into stages, timed from inside
// the daemon (stageTimer): in (publish and kick, the queue's leading
// goroutine waking, pop, passing the lead on, up to fusewire's
// HandleChain), parse (HandleChain
// to the filesystem's Read), copy (Read to the result's Done, which
// fusewire calls right after its preadv), reply (Done to the end of
// HandleChain) and out (push, call, and the driver seeing the used entry:
// the waiting goroutine itself while it halt-polls, else the reaper the
// call eventfd wakes and then the waiting goroutine).
//
// The driver stands in for a guest on KVM, whose vCPU halt-polls for
// 200 µs (kvmHaltPoll) before its thread sleeps; halt-polled is the share
// of READs the waiting goroutine completed itself while it polled. The
// guest=no-halt-poll row turns that off: out then measures the driver's
// own wake-up through Go's runtime poller, which the daemon does not see.
func BenchmarkSequentialRead(b *testing.B) {
	path := bigFile(b)
	for _, tc := range []struct {
		name     string
		segment  int
		indirect bool
		reversed bool
		workers  int
		haltPoll time.Duration
	}{
		{"data=1x1MiB", readSize, false, false, 0, kvmHaltPoll},
		// A guest whose vCPU thread sleeps at once: out then times the
		// driver's own wake-up by Go's runtime poller.
		{"data=1x1MiB/guest=no-halt-poll", readSize, false, false, 0, 0},
		{"data=256x4KiB-indirect", 4096, true, false, 0, kvmHaltPoll},
		// One goroutine serving inline: no lead passing.
		{"data=256x4KiB-indirect/workers=inline", 4096, true, false, -1, kvmHaltPoll},
		// No two pages adjacent: 256 iovecs reach preadv.
		{"data=256x4KiB-indirect-reversed", 4096, true, true, 0, kvmHaltPoll},
	} {
		b.Run(tc.name, func(b *testing.B) {
			st := &stageTimer{RawFileSystem: shareFS(b, filepath.Dir(path))}
			dm := startWrapped(b, st, 1, tc.workers, func(d *fusewire.Device) vhostuser.Device {
				return timedDevice{d, st}
			})
			opts := guestOpts(testdriver.QEMU, 1)
			opts.HaltPoll = tc.haltPoll
			g := connectGuestOpts(b, dm, opts)
			c := g.client(1, testdriver.Layout{})
			g.init(c)
			e, err := c.Lookup(fuse.FUSE_ROOT_ID, "big")
			if err != nil {
				b.Fatal(err)
			}
			op, err := c.Open(e.NodeId, syscall.O_RDONLY)
			if err != nil {
				b.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			fd := int(f.Fd())
			buf := make([]byte, readSize)
			guestBuf := make([]byte, readSize)
			rr := newRawRead(b, g, c, e.NodeId, op.Fh, tc.segment, tc.indirect, tc.reversed)

			// Check the bytes once.
			if err := rr.read(readSize); err != nil {
				b.Fatal(err)
			}
			for i, gpa := range rr.pages {
				g.drv.ReadGuest(guestBuf[i*tc.segment:(i+1)*tc.segment], gpa)
			}
			if _, err := unix.Pread(fd, buf, readSize); err != nil || !bytes.Equal(buf, guestBuf) {
				b.Fatalf("guest RAM does not hold the file's bytes (%v)", err)
			}

			var virtio, plain, in, parse, cp, reply, out []time.Duration
			off := uint64(0)
			polled := g.drv.HaltPolled()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if err := rr.read(off); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				// Half a file away: a block the READ did not just pull
				// into the CPU caches (reading the same block right
				// after would find it there and run twice as fast).
				if n, err := unix.Pread(fd, buf, int64((off+benchFileSize/2)%benchFileSize)); err != nil || n != readSize {
					b.Fatalf("pread: %d, %v", n, err)
				}
				virtio = append(virtio, t1.Sub(t0))
				plain = append(plain, time.Since(t1))
				enter, called, copied, exit := st.times()
				in = append(in, enter.Sub(t0))
				parse = append(parse, called.Sub(enter))
				cp = append(cp, copied.Sub(called))
				reply = append(reply, exit.Sub(copied))
				out = append(out, t1.Sub(exit))
				off = (off + readSize) % benchFileSize
			}
			b.StopTimer()
			b.ReportMetric(float64(g.drv.HaltPolled()-polled)/float64(b.N), "halt-polled")
			// Medians: the machine is shared, and a preempted read
			// says nothing about either path.
			v, p := median(virtio), median(plain)
			b.ReportMetric(readSize/1e6/v.Seconds(), "virtio-MB/s")
			b.ReportMetric(readSize/1e6/p.Seconds(), "pread-MB/s")
			b.ReportMetric(p.Seconds()/v.Seconds(), "ratio")
			b.ReportMetric(float64(v.Nanoseconds()), "virtio-p50-ns")
			b.ReportMetric(float64(p.Nanoseconds()), "pread-p50-ns")
			for _, m := range []struct {
				name string
				ds   []time.Duration
			}{{"in", in}, {"parse", parse}, {"copy", cp}, {"reply", reply}, {"out", out}} {
				b.ReportMetric(float64(median(m.ds).Nanoseconds()), m.name+"-p50-ns")
			}
		})
	}
}

// stageTimer records when the last chain entered and left fusewire's
// HandleChain (through timedDevice), when its Read reached the filesystem,
// and when the read result was released (Done), which fusewire does right
// after copying it into the guest's buffers. One READ in flight at a time.
type stageTimer struct {
	fuse.RawFileSystem
	enter, called, done, exit atomic.Int64
}

func (s *stageTimer) times() (enter, called, done, exit time.Time) {
	return time.Unix(0, s.enter.Load()), time.Unix(0, s.called.Load()), time.Unix(0, s.done.Load()), time.Unix(0, s.exit.Load())
}

func (s *stageTimer) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	s.called.Store(time.Now().UnixNano())
	res, st := s.RawFileSystem.Read(cancel, in, buf)
	if seg, ok := res.(fusewire.SegmentedResult); ok && st.Ok() {
		return timedResult{seg, &s.done}, st
	}
	return res, st
}

// timedDevice notes when fusewire starts and finishes a chain.
type timedDevice struct {
	*fusewire.Device
	st *stageTimer
}

func (d timedDevice) HandleChain(ctx context.Context, queue int, c *virtqueue.Chain) uint32 {
	d.st.enter.Store(time.Now().UnixNano())
	n := d.Device.HandleChain(ctx, queue, c)
	d.st.exit.Store(time.Now().UnixNano())
	return n
}

// timedResult is a SegmentedResult that notes when it is released.
type timedResult struct {
	fusewire.SegmentedResult
	done *atomic.Int64
}

func (t timedResult) Done() {
	t.done.Store(time.Now().UnixNano())
	t.SegmentedResult.Done()
}

// BenchmarkGetAttr measures GETATTR of the root through the whole path:
// one request at a time on one queue (round-trip latency), and several in
// flight on 1 and 4 request queues (ops/s). "direct" calls the
// filesystem's GetAttr in process, the cost without the transport.
func BenchmarkGetAttr(b *testing.B) {
	b.Run("direct", func(b *testing.B) {
		fs := shareFS(b, b.TempDir())
		var out fuse.AttrOut
		for b.Loop() {
			if st := fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: fuse.FUSE_ROOT_ID}}, &out); !st.Ok() {
				b.Fatal(st)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
	for _, tc := range []struct{ queues, inflight int }{{1, 1}, {1, 8}, {4, 1}, {4, 8}} {
		b.Run(fmt.Sprintf("queues=%d/inflight=%d", tc.queues, tc.inflight), func(b *testing.B) {
			dm, _ := serveDir(b, b.TempDir(), tc.queues)
			g := connectGuest(b, dm, testdriver.CloudHypervisor, tc.queues)
			g.init(g.client(1, testdriver.Layout{}))
			runParallel(b, g, tc.queues, tc.inflight, func(c *fuseclient.Client, i int) error {
				_, err := c.GetAttr(fuse.FUSE_ROOT_ID)
				return err
			})
		})
	}
}

// runParallel runs b.N calls of op spread over inflight goroutines per
// request queue and reports ops/s and the p50/p99 latency of one call.
func runParallel(b *testing.B, g *guest, queues, inflight int, op func(c *fuseclient.Client, i int) error) {
	workers := queues * inflight
	lat := make([][]time.Duration, workers)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	b.ResetTimer()
	for w := range workers {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := g.client(1+w%queues, testdriver.Layout{})
			mine := make([]time.Duration, 0, b.N/workers+1)
			for i := w; i < b.N; i += workers {
				t0 := time.Now()
				if err := op(c, i); err != nil {
					errs <- err
					return
				}
				mine = append(mine, time.Since(t0))
			}
			lat[w] = mine
		}(w)
	}
	wg.Wait()
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Nanoseconds()), "p50-ns")
		b.ReportMetric(float64(all[len(all)*99/100].Nanoseconds()), "p99-ns")
	}
}

// median returns the middle of ds (which it sorts).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// BenchmarkRAFS measures LOOKUP and GETATTR over every entry of the v5
// fixture through the whole path (one queue, one request in flight, and
// 4 queues with 8 in flight), with direct in-process calls of the same
// filesystem as the reference.
func BenchmarkRAFS(b *testing.B) {
	fx := rafsFixtures[1]
	type entry struct {
		parent uint64
		name   string
		node   uint64
	}
	// Every (parent, name) pair of the image, found through the path.
	list := func(b *testing.B, c *fuseclient.Client) []entry {
		var out []entry
		var walk func(node uint64)
		walk = func(node uint64) {
			es, err := readDirPlusAll(c, node, 1<<16)
			if err != nil {
				b.Fatal(err)
			}
			for _, de := range es {
				if de.Name == "." || de.Name == ".." {
					continue
				}
				out = append(out, entry{node, de.Name, de.Entry.NodeId})
				if de.Entry.Attr.Mode&syscall.S_IFMT == syscall.S_IFDIR {
					walk(de.Entry.NodeId)
				}
			}
		}
		walk(fuse.FUSE_ROOT_ID)
		return out
	}
	ops := map[string]func(c *fuseclient.Client, e entry) error{
		"lookup": func(c *fuseclient.Client, e entry) error {
			_, err := c.Lookup(e.parent, e.name)
			return err
		},
		"getattr": func(c *fuseclient.Client, e entry) error {
			_, err := c.GetAttr(e.node)
			return err
		},
	}
	for _, name := range []string{"lookup", "getattr"} {
		op := ops[name]
		b.Run(name+"/direct", func(b *testing.B) {
			dm, counter, _ := serveFixture(b, fx, 1)
			g := connectGuest(b, dm, testdriver.CloudHypervisor, 1)
			c := g.client(1, testdriver.Layout{})
			g.init(c)
			es := list(b, c)
			fs := counter.RawFileSystem
			var eo fuse.EntryOut
			var ao fuse.AttrOut
			i := 0
			for b.Loop() {
				e := es[i%len(es)]
				var st fuse.Status
				if name == "lookup" {
					st = fs.Lookup(nil, &fuse.InHeader{NodeId: e.parent}, e.name, &eo)
				} else {
					st = fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: e.node}}, &ao)
				}
				if !st.Ok() {
					b.Fatal(st)
				}
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
		for _, tc := range []struct{ queues, inflight int }{{1, 1}, {4, 8}} {
			b.Run(fmt.Sprintf("%s/queues=%d/inflight=%d", name, tc.queues, tc.inflight), func(b *testing.B) {
				dm, _, _ := serveFixture(b, fx, tc.queues)
				g := connectGuest(b, dm, testdriver.CloudHypervisor, tc.queues)
				c := g.client(1, testdriver.Layout{})
				g.init(c)
				es := list(b, c)
				runParallel(b, g, tc.queues, tc.inflight, func(c *fuseclient.Client, i int) error {
					return op(c, es[i%len(es)])
				})
			})
		}
	}
}
