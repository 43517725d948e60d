package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/metrics"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
)

// observed is an in-process daemon whose counters are on: the API with
// metrics, a guest (testdriver) on a device observed by the counters, and
// GET /metrics on a loopback TCP port.
type observed struct {
	*daemon
	m        *metrics.Daemon
	c        *fuseclient.Client
	promAddr string
}

func startObserved(t *testing.T, to metrics.TransportOptions) *observed {
	t.Helper()
	to.MeasureLatency = true
	md := metrics.NewDaemon(metrics.Options{Defaults: metrics.Settings{MeasureLatency: true}, Transport: to})
	caches := storage.NewPool(quiet())
	t.Cleanup(func() { caches.Close() })
	reg := metrics.Registry(md, caches)
	d := startDaemonWith(t, func(o *Options) {
		o.Metrics = md
		o.Caches = caches
		o.Prometheus = metrics.Handler(reg)
		o.NewFS = DefaultNewFS(FSOptions{Logger: quiet(), Caches: caches})
	})
	sock := filepath.Join(t.TempDir(), "vhost-fs.sock")
	l, err := vhostuser.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	dev := fusewire.NewDevice(d.v, fusewire.Options{Logger: quiet(), Observer: md.Transport})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- vhostuser.Serve(ctx, l, dev, vhostuser.Options{RequestQueues: 1, Logger: quiet()}) }()
	drv, err := testdriver.Connect(sock, testdriver.Options{Sequence: testdriver.QEMU, QueueSize: 256, MemRegions: []uint64{32 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		drv.Close()
		cancel()
		<-served
	})
	send := func(q int) fuseclient.SendFunc {
		return func(readable [][]byte, sizes []int) ([]byte, error) {
			return drv.Submit(q, readable, sizes, testdriver.Layout{})
		}
	}
	c := fuseclient.New(send(1))
	c.Hiprio = send(0)
	if _, err := c.Init(38, 0xb7bfffffb, 128<<10); err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(reg))
	hs := &http.Server{Handler: mux}
	go hs.Serve(tl)
	t.Cleanup(func() { hs.Close() })
	return &observed{daemon: d, m: md, c: c, promAddr: tl.Addr().String()}
}

// observedConfig is a localfs image config with a blob cache in a
// temporary directory, per-file accounting and the access pattern on, no
// prefetch (so that every read is the guest's).
func observedConfig(t *testing.T) string {
	dir, err := filepath.Abs(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{
		"device": map[string]any{
			"backend": map[string]any{"type": "localfs", "config": map[string]any{"dir": dir}},
			"cache":   map[string]any{"type": "blobcache", "config": map[string]any{"work_dir": t.TempDir()}},
		},
		"mode": "direct", "iostats_files": true, "access_pattern": true,
	})
	return string(b)
}

func (o *observed) getJSON(t *testing.T, uri string, v any) int {
	t.Helper()
	r := o.do(t, "GET", uri, "")
	if r.status == http.StatusOK {
		if err := json.Unmarshal(r.body, v); err != nil {
			t.Fatalf("%s: %v: %s", uri, err, r.body)
		}
	}
	return r.status
}

// workload is the scripted set of operations: it returns the file's node
// id (mount-local inode) and size. Counted on the image: 3 lookups (one
// negative), 1 readlink (fails: EINVAL), 2 getattrs, 1 open, 2 reads of
// the whole file, 1 release.
func (o *observed) workload(t *testing.T, mnt string) (ino uint64, size int) {
	t.Helper()
	c := o.c
	root, err := c.Lookup(fuse.FUSE_ROOT_ID, strings.TrimPrefix(mnt, "/"))
	if err != nil {
		t.Fatal(err)
	}
	before := o.m.Global()
	dir, err := c.Lookup(root.NodeId, "hardlink-test")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := c.Lookup(dir.NodeId, "no-such-file"); err != nil || e.NodeId != 0 {
		t.Fatalf("lookup of a missing file: %+v, %v; want a negative entry", e, err)
	}
	f, err := c.Lookup(dir.NodeId, "foo")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(fusewire.OpReadlink, f.NodeId, nil, nil, 0, 4096); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("readlink of a regular file: %v, want EINVAL", err)
	}
	for range 2 {
		if _, err := c.GetAttr(f.NodeId); err != nil {
			t.Fatal(err)
		}
	}
	oo, err := c.Open(f.NodeId, syscall.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		b, err := c.Read(f.NodeId, oo.Fh, 0, uint32(f.Size))
		if err != nil || len(b) != int(f.Size) {
			t.Fatalf("read: %d bytes, %v", len(b), err)
		}
	}
	if err := c.Release(f.NodeId, oo.Fh); err != nil {
		t.Fatal(err)
	}
	if before.FopHits[metrics.FopRead] != 0 || before.FopHits[metrics.FopOpen] != 0 {
		t.Fatalf("counters before the workload: %+v", before)
	}
	return f.NodeId & (1<<56 - 1), int(f.Size)
}

// TestMetricsAPIWorkload checks nydusd's metrics routes against a scripted
// guest workload: exact counts under nydusd's JSON names.
func TestMetricsAPIWorkload(t *testing.T) {
	o := startObserved(t, metrics.TransportOptions{})
	const mnt = "/img"
	if r := o.do(t, "POST", "/api/v1/mount?mountpoint="+mnt, mountBody("rafs", bootstrap, observedConfig(t))); r.status != http.StatusNoContent {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r := o.do(t, "GET", "/api/v1/metrics/inflight", ""); r.status != http.StatusNoContent {
		t.Fatalf("inflight when idle: %d %s", r.status, r.body)
	}
	ino, size := o.workload(t, mnt)

	t.Run("global", func(t *testing.T) {
		var raw map[string]json.RawMessage
		if st := o.getJSON(t, "/api/v1/metrics?id="+mnt, &raw); st != http.StatusOK {
			t.Fatalf("status %d", st)
		}
		for _, k := range []string{"files_account_enabled", "access_pattern_enabled", "record_latest_read_files_enabled",
			"measure_latency", "id", "nr_opens", "data_read", "block_count_read", "fop_hits", "fop_errors",
			"fop_cumulative_latency_total", "read_latency_dist"} {
			if _, ok := raw[k]; !ok {
				t.Errorf("no %q in %v", k, raw)
			}
		}
		var g metrics.Global
		o.getJSON(t, "/api/v1/metrics?id="+mnt, &g)
		want := map[metrics.Fop]uint64{metrics.FopLookup: 3, metrics.FopReadlink: 1, metrics.FopGetattr: 2, metrics.FopOpen: 1,
			metrics.FopRead: 2, metrics.FopRelease: 1}
		for f := range metrics.FopCount {
			if f == metrics.FopGetattr { // the mount root's attributes at the first lookup
				if g.FopHits[f] != want[f]+1 {
					t.Errorf("fop_hits[%s] = %d, want %d", f, g.FopHits[f], want[f]+1)
				}
				continue
			}
			if g.FopHits[f] != want[f] {
				t.Errorf("fop_hits[%s] = %d, want %d", f, g.FopHits[f], want[f])
			}
		}
		if g.FopErrors != [metrics.FopCount]uint64{metrics.FopReadlink: 1} {
			t.Errorf("fop_errors = %v, want 1 readlink", g.FopErrors)
		}
		if g.NrOpens != 1 || g.DataRead != uint64(2*size) || g.BlockCountRead[metrics.SizeBucket(size)] != 2 {
			t.Errorf("nr_opens %d, data_read %d (want %d), block_count_read %v", g.NrOpens, g.DataRead, 2*size, g.BlockCountRead)
		}
		var dist uint64
		for _, n := range g.ReadLatencyDist {
			dist += n
		}
		if dist != 2 || !g.MeasureLatency || !g.FilesAccountEnabled || !g.AccessPatternEnabled || g.ID != mnt {
			t.Errorf("read_latency_dist %v, %+v", g.ReadLatencyDist, g)
		}
		// Without an id: the one mount's numbers.
		var all metrics.Global
		o.getJSON(t, "/api/v1/metrics", &all)
		if all.FopHits != g.FopHits {
			t.Errorf("daemon totals %v, mount %v", all.FopHits, g.FopHits)
		}
		if st := o.do(t, "GET", "/api/v1/metrics?id=/nothing", "").status; st != http.StatusNotFound {
			t.Errorf("unknown id: %d", st)
		}
	})
	t.Run("files", func(t *testing.T) {
		var files []metrics.File
		o.getJSON(t, "/api/v1/metrics/files?id="+mnt, &files)
		var f *metrics.File
		for i := range files {
			if files[i].Ino == ino {
				f = &files[i]
			}
		}
		if f == nil {
			t.Fatalf("no entry for inode %d in %+v", ino, files)
		}
		// readlink, getattr 2, open, read 2, release (lookups count
		// against the parent directory).
		if f.TotalFops != 7 || f.DataRead != uint64(2*size) || f.FopHits[metrics.FopRead] != 2 {
			t.Errorf("file %+v", f)
		}
	})
	t.Run("pattern", func(t *testing.T) {
		var p []metrics.Access
		o.getJSON(t, "/api/v1/metrics/pattern?id="+mnt, &p)
		found := false
		for _, a := range p {
			if a.Ino == ino {
				found = a.NrRead == 2 && a.FirstAccessTimeSecs > 0
			}
		}
		if !found {
			t.Errorf("pattern %+v has no inode %d read twice", p, ino)
		}
	})
	t.Run("daemon backend of a counted mount", func(t *testing.T) {
		if r := o.do(t, "GET", "/api/v1/daemon/backend?mountpoint="+mnt, ""); r.status != http.StatusOK {
			t.Errorf("%d %s", r.status, r.body)
		}
	})
	t.Run("events", func(t *testing.T) {
		o.m.Events.Add("test error")
		var ev metrics.EventsReply
		if st := o.getJSON(t, "/api/v1/daemon/events", &ev); st != http.StatusOK {
			t.Fatalf("status %d", st)
		}
		if ev.MaxErrors != metrics.DefaultMaxErrors || ev.TotalErrors != 1 || len(ev.Errors) != 1 {
			t.Errorf("events %+v", ev)
		}
	})
	t.Run("prometheus text on the API socket", func(t *testing.T) {
		resp, err := o.client.Get("http://unix/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body := string(b)
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("Content-Type %q", ct)
		}
		for _, want := range []string{
			`nydus_virtiofsd_fuse_requests_total{opcode="READ"} 2`,
			fmt.Sprintf(`nydus_virtiofsd_fuse_read_bytes_total %d`, 2*size),
			`nydus_virtiofsd_fop_hits_total{fop="open",mount="/img"} 1`,
			`nydus_virtiofsd_fuse_errors_total{errno="EINVAL",opcode="READLINK"} 1`,
			"go_goroutines", "process_resident_memory_bytes",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("no %q in\n%s", want, body)
			}
		}
	})
}

// TestPrometheusScrapesDaemon runs Debian's prometheus against the
// daemon's /metrics and checks the scripted workload's numbers through
// Prometheus' HTTP API.
func TestPrometheusScrapesDaemon(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		testenv.Skip(t, "prometheus not installed (scripts/install-deps.sh installs it)")
	}
	o := startObserved(t, metrics.TransportOptions{})
	const mnt = "/img"
	if r := o.do(t, "POST", "/api/v1/mount?mountpoint="+mnt, mountBody("rafs", bootstrap, observedConfig(t))); r.status != http.StatusNoContent {
		t.Fatalf("%d %s", r.status, r.body)
	}
	_, size := o.workload(t, mnt)

	dir := t.TempDir()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: nydus\n    static_configs:\n      - targets: ['%s']\n", o.promAddr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	web := freePort(t)
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web)
	logf, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", b)
		}
	})
	queries := map[string]float64{
		`nydus_virtiofsd_fuse_requests_total{opcode="READ"}`:                  2,
		`nydus_virtiofsd_fuse_requests_total{opcode="OPEN"}`:                  1,
		`nydus_virtiofsd_fuse_errors_total{opcode="READLINK",errno="EINVAL"}`: 1,
		`nydus_virtiofsd_fuse_read_bytes_total`:                               float64(2 * size),
		`nydus_virtiofsd_fop_hits_total{mount="/img",fop="read"}`:             2,
		`nydus_virtiofsd_data_read_bytes_total{mount="/img"}`:                 float64(2 * size),
		`nydus_virtiofsd_mounts`:                                              1,
		`nydus_virtiofsd_fuse_request_duration_seconds_count{opcode="READ"}`:  2,
		`count(nydus_virtiofsd_backend_reads_total > 0)`:                      1,
		`count(go_goroutines > 0)`:                                            1,
		`count(nydus_virtiofsd_virtqueue_inflight_requests{queue="1"} == 0)`:  1,
	}
	deadline := time.Now().Add(60 * time.Second)
	for q, want := range queries {
		for {
			got, err := promQuery(web, q)
			if err == nil && got == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s = %v (%v), want %v", q, got, err, want)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// promQuery runs an instant query and returns its single value.
func promQuery(addr, q string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if len(r.Data.Result) != 1 {
		return 0, fmt.Errorf("%d results", len(r.Data.Result))
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	return strconv.ParseFloat(s, 64)
}
