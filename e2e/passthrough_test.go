package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/passthrough"
)

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// sharePassthrough makes a share with a few files and serves it.
func sharePassthrough(t testing.TB, queues int) (dir string, dm *daemon, counter *readCounter) {
	t.Helper()
	dir = t.TempDir()
	files := map[string][]byte{
		"big":       randomBytes(1, 2<<20+12345),
		"small":     []byte("hello, guest\n"),
		"sub/inner": randomBytes(2, 5000),
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fs, err := passthrough.New(dir, passthrough.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	counter = &readCounter{RawFileSystem: fs}
	return dir, startDaemon(t, counter, queues, 0), counter
}

func TestPassthroughEndToEnd(t *testing.T) {
	for _, seq := range sequences {
		t.Run(seq.String(), func(t *testing.T) {
			dir, dm, counter := sharePassthrough(t, 1)
			g := connectGuest(t, dm, seq, 1)
			c := g.client(1, testdriver.Layout{})
			g.init(c)
			big, err := os.ReadFile(filepath.Join(dir, "big"))
			if err != nil {
				t.Fatal(err)
			}

			// LOOKUP and GETATTR agree with the host.
			e, err := lookupPath(c, "/big")
			if err != nil {
				t.Fatal(err)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(dir, "big"), &st); err != nil {
				t.Fatal(err)
			}
			if e.Attr.Ino != st.Ino || e.Attr.Size != uint64(len(big)) || e.Attr.Mode != st.Mode {
				t.Fatalf("LOOKUP big: ino %d size %d mode %o, host ino %d size %d mode %o", e.Attr.Ino, e.Attr.Size, e.Attr.Mode, st.Ino, len(big), st.Mode)
			}
			a, err := c.GetAttr(e.NodeId)
			if err != nil {
				t.Fatal(err)
			}
			if a.Attr.Ino != st.Ino || a.Attr.Size != uint64(len(big)) {
				t.Fatalf("GETATTR big: %+v", a.Attr)
			}

			// OPEN and READ in every layout.
			op, err := c.Open(e.NodeId, syscall.O_RDONLY)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range layouts {
				t.Run("read-"+l.name, func(t *testing.T) {
					lc := g.client(1, l.lay)
					if l.maxChunk >= 1<<20 {
						got, err := readRange(lc, e.NodeId, op.Fh, 0, len(big)+100, l.maxChunk)
						if err != nil {
							t.Fatal(err)
						}
						if !bytes.Equal(got, big) {
							t.Fatalf("whole file: %d bytes differ from the host's %d", len(got), len(big))
						}
					}
					checkWindows(t, lc, e.NodeId, op.Fh, big, l.maxChunk)
				})
			}
			if b, err := c.Read(e.NodeId, op.Fh, uint64(len(big))+10, 4096); err != nil || len(b) != 0 {
				t.Fatalf("READ past EOF: %d bytes, %v", len(b), err)
			}
			if err := c.Release(e.NodeId, op.Fh); err != nil {
				t.Fatalf("RELEASE: %v", err)
			}
			if counter.segmented.Load() == 0 || counter.other.Load() != 0 {
				t.Errorf("passthrough READs: %d zero-copy (SegmentedResult), %d copied; want all zero-copy", counter.segmented.Load(), counter.other.Load())
			}

			// READDIRPLUS of the root, in a buffer that holds one entry
			// at a time, then a big one.
			for _, size := range []uint32{200, 64 << 10} {
				es, err := readDirPlusAll(c, fuse.FUSE_ROOT_ID, size)
				if err != nil {
					t.Fatal(err)
				}
				seen := map[string]*fuse.EntryOut{}
				for _, de := range es {
					seen[de.Name] = de.Entry
				}
				for _, name := range []string{"big", "small", "sub"} {
					if seen[name] == nil {
						t.Fatalf("READDIRPLUS (%d-byte buffer): %q missing from %d entries", size, name, len(es))
					}
				}
				if seen["big"].Attr.Size != uint64(len(big)) || seen["sub"].Attr.Mode&syscall.S_IFMT != syscall.S_IFDIR {
					t.Fatalf("READDIRPLUS attributes: big %+v, sub %+v", seen["big"].Attr, seen["sub"].Attr)
				}
			}

			// CREATE and WRITE in several layouts; the host sees the bytes.
			ce, err := c.Create(fuse.FUSE_ROOT_ID, "new", syscall.O_WRONLY|syscall.O_CREAT, 0o640)
			if err != nil {
				t.Fatalf("CREATE: %v", err)
			}
			var want []byte
			for i, l := range layouts {
				n := l.maxChunk / 2
				if n > 300<<10 {
					n = 300 << 10
				}
				data := randomBytes(uint64(10+i), n)
				wrote, err := g.client(1, l.lay).Write(ce.NodeId, ce.Fh, uint64(len(want)), data)
				if err != nil || int(wrote) != len(data) {
					t.Fatalf("WRITE %d bytes (%s): wrote %d, %v", len(data), l.name, wrote, err)
				}
				want = append(want, data...)
			}
			if err := c.Release(ce.NodeId, ce.Fh); err != nil {
				t.Fatalf("RELEASE new: %v", err)
			}
			got, err := os.ReadFile(filepath.Join(dir, "new"))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("host sees %d bytes of %d written (%v)", len(got), len(want), err)
			}
			if fi, err := os.Stat(filepath.Join(dir, "new")); err != nil || fi.Mode().Perm() != 0o640 {
				t.Fatalf("created file mode %v, %v", fi.Mode(), err)
			}

			// FORGET and BATCH_FORGET on hiprio get no reply (fuseclient
			// fails on one), and the session goes on.
			if err := c.Forget(ce.NodeId, 1); err != nil {
				t.Fatalf("FORGET: %v", err)
			}
			if err := c.BatchForget([][2]uint64{{e.NodeId, 1}}); err != nil {
				t.Fatalf("BATCH_FORGET: %v", err)
			}
			if _, err := c.GetAttr(fuse.FUSE_ROOT_ID); err != nil {
				t.Fatalf("GETATTR after FORGET: %v", err)
			}
			// CREATE gave "new" its only lookup: it is forgotten now.
			if _, err := c.GetAttr(ce.NodeId); errnoOf(err) != syscall.EBADF {
				t.Fatalf("GETATTR of a forgotten node: %v, want EBADF", err)
			}
			if _, err := c.GetAttr(e.NodeId); err != nil {
				t.Fatalf("GETATTR of big, which still has lookups: %v", err)
			}
			if _, err := lookupPath(c, "/sub/inner"); err != nil {
				t.Fatal(err)
			}
			g.destroy(c)
			if _, err := c.GetAttr(fuse.FUSE_ROOT_ID); errnoOf(err) != syscall.EIO {
				t.Fatalf("GETATTR after DESTROY: %v, want EIO", err)
			}
		})
	}
}

// TestParallelQueues drives four request queues at once, each with several
// requests in flight, mixing LOOKUP, GETATTR and READ, and checks every
// reply.
func TestParallelQueues(t *testing.T) {
	const queues, inflight, rounds = 4, 4, 25
	dir, dm, _ := sharePassthrough(t, queues)
	g := connectGuest(t, dm, testdriver.CloudHypervisor, queues)
	g.init(g.client(1, testdriver.Layout{}))
	big, err := os.ReadFile(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, queues*inflight)
	for q := 1; q <= queues; q++ {
		for w := 0; w < inflight; w++ {
			go func(q, w int) {
				errs <- hammer(g.client(q, layouts[(q+w)%len(layouts)].lay), big, w, rounds)
			}(q, w)
		}
	}
	for range queues * inflight {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// hammer does rounds of LOOKUP + GETATTR + OPEN + READ + RELEASE of big.
func hammer(c *fuseclient.Client, big []byte, seed, rounds int) error {
	r := rand.New(rand.NewPCG(uint64(seed), 7))
	for range rounds {
		e, err := c.Lookup(fuse.FUSE_ROOT_ID, "big")
		if err != nil {
			return err
		}
		if _, err := c.GetAttr(e.NodeId); err != nil {
			return err
		}
		op, err := c.Open(e.NodeId, syscall.O_RDONLY)
		if err != nil {
			return err
		}
		off := r.IntN(len(big))
		got, err := c.Read(e.NodeId, op.Fh, uint64(off), 500)
		if err != nil {
			return err
		}
		if want := big[off:min(len(big), off+500)]; !bytes.Equal(got, want) {
			return fmt.Errorf("READ 500 at %d: wrong bytes (%d, want %d)", off, len(got), len(want))
		}
		if err := c.Release(e.NodeId, op.Fh); err != nil {
			return err
		}
		if err := c.Forget(e.NodeId, 1); err != nil {
			return err
		}
	}
	return nil
}

// TestBuffersStraddlingRegions puts a READ's data buffer and a WRITE's
// payload across the boundary between two guest RAM regions (QEMU's
// layout when RAM is split), in one descriptor each: the daemon must split
// them into two host slices.
func TestBuffersStraddlingRegions(t *testing.T) {
	for _, seq := range sequences {
		t.Run(seq.String(), func(t *testing.T) {
			dir, dm, counter := sharePassthrough(t, 1)
			g := connectGuestOpts(t, dm, testdriver.Options{Sequence: seq, QueueSize: 256, MemRegions: []uint64{4 << 20, 4 << 20}})
			c := g.client(1, testdriver.Layout{})
			g.init(c)
			big, err := os.ReadFile(filepath.Join(dir, "big"))
			if err != nil {
				t.Fatal(err)
			}
			e, err := c.Lookup(fuse.FUSE_ROOT_ID, "big")
			if err != nil {
				t.Fatal(err)
			}
			op, err := c.Open(e.NodeId, syscall.O_RDWR)
			if err != nil {
				t.Fatal(err)
			}
			// Take guest RAM until a 64 KiB block crosses into region 1.
			const n = 64 << 10
			boundary := g.drv.RegionStart(1)
			var buf uint64
			for {
				gpa, err := g.drv.Alloc(n)
				if err != nil {
					t.Fatalf("no block across %#x: %v", boundary, err)
				}
				if gpa < boundary && gpa+n > boundary {
					buf = gpa
					break
				}
			}
			in := fuse.ReadIn{Fh: op.Fh, Offset: 12345, Size: n}
			req := c.Build(15, e.NodeId, fuseclient.Bytes(&in)[inHeaderSize:])
			reqGPA, _ := g.drv.Alloc(len(req))
			outGPA, _ := g.drv.Alloc(outHeaderSize)
			g.drv.WriteGuest(reqGPA, req)
			p, err := g.drv.StartRaw(1, []testdriver.Desc{
				{Addr: reqGPA, Len: uint32(len(req)), Flags: testdriver.FlagNext, Next: 1},
				{Addr: outGPA, Len: uint32(outHeaderSize), Flags: testdriver.FlagWrite | testdriver.FlagNext, Next: 2},
				{Addr: buf, Len: n, Flags: testdriver.FlagWrite, Next: 0xffff},
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Wait(); err != nil || p.Len() != uint32(outHeaderSize+n) {
				t.Fatalf("READ across regions: %d bytes, %v", p.Len(), err)
			}
			got := make([]byte, n)
			g.drv.ReadGuest(got, buf)
			if !bytes.Equal(got, big[12345:12345+n]) {
				t.Fatal("READ across regions: wrong bytes in guest RAM")
			}
			if counter.segmented.Load() == 0 {
				t.Error("READ across regions did not take the zero-copy path")
			}

			// WRITE with its payload across the boundary.
			data := randomBytes(99, n)
			g.drv.WriteGuest(buf, data)
			win := fuse.WriteIn{Fh: op.Fh, Offset: 7, Size: n}
			wreq := c.Build(16, e.NodeId, fuseclient.Bytes(&win)[inHeaderSize:])
			setLength(wreq, uint32(len(wreq)+n)) // the payload is in its own descriptor
			g.drv.WriteGuest(reqGPA, wreq)
			wout, _ := g.drv.Alloc(outHeaderSize + 8)
			p, err = g.drv.StartRaw(1, []testdriver.Desc{
				{Addr: reqGPA, Len: uint32(len(wreq)), Flags: testdriver.FlagNext, Next: 1},
				{Addr: buf, Len: n, Flags: testdriver.FlagNext, Next: 2},
				{Addr: wout, Len: uint32(outHeaderSize + 8), Flags: testdriver.FlagWrite, Next: 0xffff},
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Wait(); err != nil || p.Len() != uint32(outHeaderSize+8) {
				t.Fatalf("WRITE across regions: %d bytes, %v", p.Len(), err)
			}
			host, err := os.ReadFile(filepath.Join(dir, "big"))
			if err != nil || !bytes.Equal(host[7:7+n], data) {
				t.Fatalf("host file after WRITE across regions differs (%v)", err)
			}
			if err := c.Release(e.NodeId, op.Fh); err != nil {
				t.Fatal(err)
			}
		})
	}
}
