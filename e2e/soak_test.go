package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/api"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/passthrough"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vfs"
)

// EnvSoak sets the soak test's duration (a Go duration, e.g. 10s for CI,
// 10m on demand); default 60 s, 10 s with -short.
const EnvSoak = "NVFS_SOAK_DURATION"

func soakDuration(t *testing.T) time.Duration {
	if v := os.Getenv(EnvSoak); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", EnvSoak, v, err)
		}
		return d
	}
	if testing.Short() {
		return 10 * time.Second
	}
	return 60 * time.Second
}

// resources is what must come back to its baseline after a soak.
type resources struct {
	goroutines, fds int
	rssKiB          int64
}

func measure(t *testing.T) resources {
	t.Helper()
	runtime.GC()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	r := resources{goroutines: runtime.NumGoroutine(), fds: len(ents)}
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			r.rssKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return r
}

// soakOp is one operation of the mix: fn runs it with a worker's state.
type soakOp struct {
	name string
	fn   func(w *soakWorker) error
}

// soakWorker is one guest thread: it keeps its own directory in the share.
type soakWorker struct {
	c      *fuseclient.Client
	id     int
	dir    uint64 // its directory under /pt (per session)
	rafs   uint64 // a RAFS file (per session)
	rafsSz uint64
	rafsD  uint64 // the RAFS mount root
	n      int
}

func (w *soakWorker) name(kind string) string {
	w.n++
	return fmt.Sprintf("%s-%d-%d", kind, w.id, w.n)
}

// call sends a request with in-struct in (a go-fuse *In type, whose
// InHeader is stripped; nil for none).
func call[T any](c *fuseclient.Client, op uint32, node uint64, in *T, payload []byte, out int) ([]byte, error) {
	var b []byte
	if in != nil {
		b = fuseclient.Bytes(in)[40:]
	}
	return c.Call(op, node, b, payload, 0, out)
}

// none is the in-struct of requests that have only names.
var none *fuse.InHeader

const (
	entryOutSize  = 128
	attrOutSize   = 104
	opSetattr     = 4
	opReadlink    = 5
	opSymlink     = 6
	opMknod       = 8
	opRmdir       = 11
	opRename      = 12
	opLink        = 13
	opFsync       = 20
	opSetxattr    = 21
	opGetxattr    = 22
	opListxattr   = 23
	opRemovexattr = 24
	opFlush       = 25
	opAccess      = 34
	opFallocate   = 43
	opRename2     = 45
	opLseek       = 46
	opCopyRange   = 47
)

var soakOps = []soakOp{
	{"lookup+forget", func(w *soakWorker) error {
		e, err := w.c.Lookup(w.rafsD, "normal-file-test")
		if err != nil {
			return err
		}
		if _, err := w.c.GetAttr(e.NodeId); err != nil {
			return err
		}
		return w.c.Forget(e.NodeId, 1)
	}},
	{"rafs read", func(w *soakWorker) error {
		o, err := w.c.Open(w.rafs, uint32(os.O_RDONLY))
		if err != nil {
			return err
		}
		off := uint64(rand.Int63n(int64(max(w.rafsSz, 1))))
		if _, err := w.c.Read(w.rafs, o.Fh, off, 64<<10); err != nil {
			return err
		}
		return w.c.Release(w.rafs, o.Fh)
	}},
	{"readdirplus", func(w *soakWorker) error {
		for _, node := range []uint64{w.rafsD, w.dir} {
			o, err := w.c.OpenDir(node)
			if err != nil {
				return err
			}
			ents, err := w.c.ReadDirPlus(node, o.Fh, 0, 16<<10)
			if err != nil {
				return err
			}
			var forget [][2]uint64
			for _, e := range ents {
				if e.Entry != nil && e.Entry.NodeId != 0 {
					forget = append(forget, [2]uint64{e.Entry.NodeId, 1})
				}
			}
			if len(forget) > 0 {
				if err := w.c.BatchForget(forget); err != nil {
					return err
				}
			}
			if err := w.c.ReleaseDir(node, o.Fh); err != nil {
				return err
			}
		}
		return nil
	}},
	{"create write fsync copy lseek fallocate", func(w *soakWorker) error {
		n := w.name("f")
		co, err := w.c.Create(w.dir, n, uint32(os.O_RDWR), 0o644)
		if err != nil {
			return err
		}
		data := make([]byte, 8192)
		rand.Read(data)
		if _, err := w.c.Write(co.NodeId, co.Fh, 0, data); err != nil {
			return err
		}
		if _, err := call(w.c, opFsync, co.NodeId, &fuse.FsyncIn{Fh: co.Fh}, nil, 0); err != nil {
			return fmt.Errorf("fsync: %w", err)
		}
		if _, err := call(w.c, opFallocate, co.NodeId, &fuse.FallocateIn{Fh: co.Fh, Offset: 8192, Length: 4096}, nil, 0); err != nil {
			return fmt.Errorf("fallocate: %w", err)
		}
		if _, err := call(w.c, opLseek, co.NodeId, &fuse.LseekIn{Fh: co.Fh, Offset: 0, Whence: 3 /* SEEK_DATA */}, nil, 8); err != nil {
			return fmt.Errorf("lseek: %w", err)
		}
		if _, err := call(w.c, opCopyRange, co.NodeId, &fuse.CopyFileRangeIn{FhIn: co.Fh, OffIn: 0, NodeIdOut: co.NodeId, FhOut: co.Fh, OffOut: 16384, Len: 4096}, nil, 8); err != nil {
			return fmt.Errorf("copy_file_range: %w", err)
		}
		if got, err := w.c.Read(co.NodeId, co.Fh, 0, 8192); err != nil || string(got) != string(data) {
			return fmt.Errorf("read back: %d bytes, %v", len(got), err)
		}
		if _, err := call(w.c, opFlush, co.NodeId, &fuse.FlushIn{Fh: co.Fh}, nil, 0); err != nil {
			return fmt.Errorf("flush: %w", err)
		}
		if err := w.c.Release(co.NodeId, co.Fh); err != nil {
			return err
		}
		if err := w.c.Unlink(w.dir, n); err != nil {
			return err
		}
		return w.c.Forget(co.NodeId, 1)
	}},
	{"setattr access", func(w *soakWorker) error {
		n := w.name("s")
		co, err := w.c.Create(w.dir, n, uint32(os.O_WRONLY), 0o600)
		if err != nil {
			return err
		}
		w.c.Release(co.NodeId, co.Fh)
		in := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_MODE | fuse.FATTR_SIZE | fuse.FATTR_MTIME, Mode: 0o640, Size: 100, Mtime: 12345}}
		if _, err := call(w.c, opSetattr, co.NodeId, &in, nil, attrOutSize); err != nil {
			return fmt.Errorf("setattr: %w", err)
		}
		if _, err := call(w.c, opAccess, co.NodeId, &fuse.AccessIn{Mask: 4}, nil, 0); err != nil && !errors.Is(err, syscall.ENOSYS) {
			return fmt.Errorf("access: %w", err)
		}
		if err := w.c.Unlink(w.dir, n); err != nil {
			return err
		}
		return w.c.Forget(co.NodeId, 1)
	}},
	{"mkdir rename rmdir", func(w *soakWorker) error {
		a, b := w.name("d"), w.name("d")
		e, err := w.c.Mkdir(w.dir, a, 0o755)
		if err != nil {
			return err
		}
		if _, err := w.c.Call(opRename, w.dir, binary.LittleEndian.AppendUint64(nil, w.dir), []byte(a+"\x00"+b+"\x00"), 0, 0); err != nil {
			return fmt.Errorf("rename: %w", err)
		}
		if _, err := call(w.c, opRmdir, w.dir, none, []byte(b+"\x00"), 0); err != nil {
			return fmt.Errorf("rmdir: %w", err)
		}
		return w.c.Forget(e.NodeId, 1)
	}},
	{"symlink readlink link rename2 mknod", func(w *soakWorker) error {
		s, l, p := w.name("l"), w.name("h"), w.name("p")
		b, err := call(w.c, opSymlink, w.dir, none, []byte(s+"\x00target\x00"), entryOutSize)
		if err != nil {
			return fmt.Errorf("symlink: %w", err)
		}
		if len(b) < 8 {
			return fmt.Errorf("symlink: short reply")
		}
		sym := binary.LittleEndian.Uint64(b) // EntryOut.NodeId
		if t, err := call(w.c, opReadlink, sym, none, nil, 4096); err != nil || string(t) != "target" {
			return fmt.Errorf("readlink: %q %v", t, err)
		}
		if _, err := call(w.c, opLink, w.dir, &fuse.LinkIn{Oldnodeid: sym}, []byte(l+"\x00"), entryOutSize); err != nil {
			return fmt.Errorf("link: %w", err)
		}
		if _, err := call(w.c, opRename2, w.dir, &fuse.RenameIn{Newdir: w.dir, Flags: 2 /* EXCHANGE */}, []byte(s+"\x00"+l+"\x00"), 0); err != nil {
			return fmt.Errorf("rename2: %w", err)
		}
		if _, err := call(w.c, opMknod, w.dir, &fuse.MknodIn{Mode: syscall.S_IFIFO | 0o644}, []byte(p+"\x00"), entryOutSize); err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
		for _, n := range []string{s, l, p} {
			if err := w.c.Unlink(w.dir, n); err != nil {
				return err
			}
		}
		return w.c.BatchForget([][2]uint64{{sym, 2}})
	}},
	{"xattrs statfs", func(w *soakWorker) error {
		k := []byte("user.soak\x00v")
		set := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, 1), 0) // size, flags (no SETXATTR_EXT)
		if _, err := w.c.Call(opSetxattr, w.dir, set, k, 0, 0); err != nil {
			return fmt.Errorf("setxattr: %w", err)
		}
		if v, err := call(w.c, opGetxattr, w.dir, &fuse.GetXAttrIn{Size: 16}, []byte("user.soak\x00"), 16); err != nil || string(v) != "v" {
			return fmt.Errorf("getxattr: %q %v", v, err)
		}
		if _, err := call(w.c, opListxattr, w.dir, &fuse.GetXAttrIn{Size: 256}, nil, 256); err != nil {
			return fmt.Errorf("listxattr: %w", err)
		}
		if _, err := call(w.c, opRemovexattr, w.dir, none, []byte("user.soak\x00"), 0); err != nil {
			return fmt.Errorf("removexattr: %w", err)
		}
		_, err := w.c.StatFs()
		return err
	}},
}

// TestSoak runs a bounded soak (EnvSoak): 4 request queues with many
// requests in flight, a mix of most opcodes over a passthrough share and a
// RAFS image mounted in a vfs table, guest re-INITs (with and without
// DESTROY) in the middle and an API mount/umount loop beside it. Every
// chain must complete; goroutines, fds, RSS and mounts must come back to
// their baseline; latency percentiles are reported.
func TestSoak(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "the passthrough share needs root (credential switching, file handles)")
	}
	dur := soakDuration(t)
	const queues, perQueue = 4, 8
	base := measure(t)
	var after resources
	table := vfs.New(vfs.Options{Logger: quietLogger()})
	t.Cleanup(func() {
		// Runs last: the driver has gone and Serve has returned.
		if err := table.Close(); err != nil {
			t.Errorf("close table: %v", err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			after = measure(t)
			if (after.goroutines <= base.goroutines+2 && after.fds <= base.fds) || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("baseline %+v, after %+v", base, after)
		if after.goroutines > base.goroutines+2 {
			buf := make([]byte, 1<<20)
			t.Errorf("goroutines %d after, %d before\n%s", after.goroutines, base.goroutines, buf[:runtime.Stack(buf, true)])
		}
		if after.fds > base.fds {
			t.Errorf("fds %d after, %d before", after.fds, base.fds)
		}
		if grown := after.rssKiB - base.rssKiB; grown > 96<<10 {
			t.Errorf("RSS grew by %d MiB", grown>>10)
		}
	})

	share := t.TempDir()
	pt, err := passthrough.New(share, passthrough.Options{Xattr: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := table.Mount("/pt", vfs.Mount{FS: pt, Type: "passthrough_fs"}); err != nil {
		t.Fatal(err)
	}
	fx := rafsFixtures[1]
	img, err := rafs.Open(filepath.Join(fixturesDir, fx.boot), rafs.Options{Backend: backend.NewLocalFS(filepath.Join(fixturesDir, fx.blobDir)), Log: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := table.Mount("/rafs", vfs.Mount{FS: rafs.NewFS(img, rafs.FSOptions{}), Type: "rafs", Close: img.Close}); err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Options{VFS: table, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	loopSrc := t.TempDir()
	os.WriteFile(filepath.Join(loopSrc, "x"), []byte("x"), 0o644)

	dm := startDaemon(t, table, queues, 0)
	g := connectGuestOpts(t, dm, testdriver.Options{Sequence: testdriver.QEMU, RequestQueues: queues, QueueSize: queueSize, MemRegions: []uint64{128 << 20}, Timeout: 20 * time.Second})

	var (
		resetMu  sync.RWMutex // workers hold it shared per operation; a reset takes it
		epoch    atomic.Int64
		stop     atomic.Bool
		lost     atomic.Int64
		failures sync.Map // op name → first error
		nfail    atomic.Int64
		latMu    sync.Mutex
		lat      []time.Duration
		ops      atomic.Int64
	)
	ctl := g.client(1, testdriver.Layout{})
	ctl.Caller.Uid, ctl.Caller.Gid = 0, 0
	g.init(ctl)

	var wg sync.WaitGroup
	for q := 1; q <= queues; q++ {
		for i := 0; i < perQueue; i++ {
			wg.Add(1)
			go func(id int) {
				defer wg.Done()
				c := g.client(q, testdriver.Layout{SegmentSize: []int{0, 4096, 512}[id%3]})
				w := &soakWorker{c: c, id: id}
				var seen int64 = -1
				var my []time.Duration
				defer func() { latMu.Lock(); lat = append(lat, my...); latMu.Unlock() }()
				for !stop.Load() {
					resetMu.RLock()
					if e := epoch.Load(); e != seen {
						if err := w.resolve(); err != nil {
							resetMu.RUnlock()
							nfail.Add(1)
							failures.LoadOrStore("resolve", err)
							return
						}
						seen = e
					}
					op := soakOps[rand.Intn(len(soakOps))]
					t0 := time.Now()
					err := op.fn(w)
					my = append(my, time.Since(t0))
					resetMu.RUnlock()
					ops.Add(1)
					if err != nil {
						var errno syscall.Errno
						if !errors.As(err, &errno) {
							lost.Add(1) // no reply: a chain that never completed
						}
						nfail.Add(1)
						failures.LoadOrStore(op.name, err)
					}
				}
			}(q*100 + i)
		}
	}
	// The API beside it: mount and umount a share at /loop.
	wg.Add(1)
	apiCycles := 0
	go func() {
		defer wg.Done()
		body := fmt.Sprintf(`{"fs_type":"passthrough_fs","source":%q,"config":""}`, loopSrc)
		for !stop.Load() {
			for _, r := range []*http.Request{
				httptest.NewRequest("POST", "/api/v1/mount?mountpoint=/loop", strings.NewReader(body)),
				httptest.NewRequest("DELETE", "/api/v1/mount?mountpoint=/loop", nil),
			} {
				rec := httptest.NewRecorder()
				srv.ServeHTTP(rec, r)
				if rec.Code != http.StatusNoContent {
					failures.LoadOrStore("api "+r.Method, fmt.Errorf("%d %s", rec.Code, rec.Body.String()))
					nfail.Add(1)
				}
			}
			apiCycles++
			time.Sleep(5 * time.Millisecond)
		}
	}()
	// Guest resets in the middle: re-INIT after DESTROY, or without it
	// (a guest that crashed and booted again).
	resets, fdTrend := 0, []int{}
	for end := time.Now().Add(dur); time.Now().Before(end); {
		time.Sleep(min(dur/6, time.Until(end)))
		if time.Until(end) < time.Second {
			break
		}
		resetMu.Lock()
		if resets%2 == 0 {
			if err := ctl.Destroy(); err != nil {
				t.Errorf("DESTROY: %v", err)
			}
		}
		if _, err := ctl.Init(38, linuxInitFlags, 128<<10); err != nil {
			t.Errorf("re-INIT: %v", err)
		}
		epoch.Add(1)
		resets++
		fdTrend = append(fdTrend, measure(t).fds)
		resetMu.Unlock()
	}
	stop.Store(true)
	wg.Wait()
	g.destroy(ctl)

	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))]
	}
	t.Logf("soak %v: %d operations (%d queues x %d in flight), %d guest re-INITs, %d API mount/umount cycles; latency p50 %v p99 %v max %v; fds after each re-INIT %v",
		dur, ops.Load(), queues, perQueue, resets, apiCycles, pct(0.50), pct(0.99), pct(1), fdTrend)
	if n := lost.Load(); n > 0 {
		t.Errorf("%d requests got no reply", n)
	}
	if n := nfail.Load(); n > 0 {
		failures.Range(func(k, v any) bool { t.Errorf("%s: %v", k, v); return true })
		t.Errorf("%d of %d operations failed", n, ops.Load())
	}
	if resets == 0 || ops.Load() == 0 {
		t.Errorf("soak did nothing: %d resets, %d ops", resets, ops.Load())
	}
	if m := table.Mounts(); len(m) != 2 {
		t.Errorf("mounts after the API loop: %+v, want /pt and /rafs", m)
	}
}

// resolve looks the worker's nodes up afresh (after a re-INIT every node
// id of the previous session is gone).
func (w *soakWorker) resolve() error {
	pt, err := lookupPath(w.c, "/pt")
	if err != nil {
		return fmt.Errorf("lookup /pt: %w", err)
	}
	dir := fmt.Sprintf("w%d", w.id)
	e, err := w.c.Lookup(pt.NodeId, dir)
	if err != nil {
		if e, err = w.c.Mkdir(pt.NodeId, dir, 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", dir, err)
		}
	}
	w.dir = e.NodeId
	r, err := lookupPath(w.c, "/rafs")
	if err != nil {
		return fmt.Errorf("lookup /rafs: %w", err)
	}
	w.rafsD = r.NodeId
	f, err := lookupPath(w.c, "/rafs/normal-file-test/holefiles/head-hole-1")
	if err != nil {
		return fmt.Errorf("lookup rafs file: %w", err)
	}
	w.rafs, w.rafsSz = f.NodeId, f.Size
	return nil
}
