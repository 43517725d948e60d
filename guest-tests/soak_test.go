package guesttests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
)

// EnvGuestSoakDuration sets the workload time of TestGuestSoak (a Go
// duration; default 60s, which keeps the whole test near two minutes
// under TCG).
const EnvGuestSoakDuration = "NVFS_GUEST_SOAK_DURATION"

// soakWorkers is the number of worker processes in the guest.
const soakWorkers = 4

// TestGuestSoak is the guest version of issue 13's soak: our daemon in
// nydusd mode (`virtiofs --sock --apisock`), its mounts made through the
// API as Kata's runtime makes them (a passthrough share at /pass, a RAFS
// image at /rafs). In one boot the guest
//   - builds an overlayfs as Kata's agent does (lower: the image, upper and
//     work: the share) and checks copy-up, a whiteout and an opaque
//     directory across an unmount and a second mount;
//   - runs the soak: four worker processes for the duration, each round
//     covering mkdir, create/write/fsync, read, pwrite, truncate, stat,
//     set/get/list/removexattr, symlink/readlink, link, rename (across
//     directories), readdir, unlink, rmdir and a journal append on the
//     share, plus a checked read, a readdir and a stat in the image; a
//     cache drop half-way;
//
// then unmounts. On the host: the daemon's fds (its Prometheus series and
// /proc/PID/fd) and goroutines (but for the share's bounded pool of
// creator threads, creatorThreads) return to what they were before the
// workload once the guest has dropped its caches, with nothing in flight;
// every journal holds exactly the rounds the guest reported; the overlay's
// whiteout and opaque mark are on the host, the guest's trusted.* stored as
// user.virtiofs.trusted.* and no trusted.* anywhere; the guest unmounts
// cleanly and the daemon exits 0 by itself. The figures (requests,
// duration, guest and daemon p99) are logged.
func TestGuestSoak(t *testing.T) {
	dur := 60 * time.Second
	if s := os.Getenv(EnvGuestSoakDuration); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Second {
			t.Fatalf("%s=%q: want a duration of at least 1s", EnvGuestSoakDuration, s)
		}
		dur = d
	}
	g := overlayGuest(t)
	daemon := rafsDaemon(t)

	// the image: the overlay's lower layer and files the workers read
	src := t.TempDir()
	if err := check.OverlayLower(filepath.Join(src, "ovl")); err != nil {
		t.Fatal(err)
	}
	for i := range 24 {
		p := filepath.Join(src, "data", fmt.Sprintf("d%d", i%4), fmt.Sprintf("f%d.bin", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := writeSeeded(p, uint64(100+i), int64(1+i*i*3000)); err != nil {
			t.Fatal(err)
		}
	}
	wantData, _, err := check.Build(filepath.Join(src, "data"), check.ManifestOptions{Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	imgDir := t.TempDir()
	boot, _, err := builder.BuildDir(src, imgDir, builder.Options{Compressor: builder.CompressZstd, ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	share := t.TempDir()
	for _, d := range []string{"soak", "ovl"} {
		if err := os.Mkdir(filepath.Join(share, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	run := t.TempDir()
	apiSock := filepath.Join(run, "api.sock")
	backend := Template("go-nydusd-api", []string{daemon, "virtiofs", "--sock", "{socket}", "--apisock", "{apisock}"})
	api := newSoakAPI(apiSock)
	before := func(ctx context.Context) error {
		if err := waitSocket(ctx, apiSock, nil, 10*time.Second); err != nil {
			return fmt.Errorf("api socket: %w", err)
		}
		cfg := localfsRafsConfig(imgDir, t.TempDir())
		for _, m := range []struct{ at, typ, source, config string }{
			{"/pass", "passthrough_fs", share, ""},
			{"/rafs", "rafs", boot, cfg},
		} {
			if err := api.mount(ctx, m.at, m.typ, m.source, m.config); err != nil {
				return err
			}
		}
		return nil
	}

	steps := []check.Step{
		{Name: "overlay", Kind: check.KindOverlay, Dir: "pass/ovl", Lower: "rafs/ovl"},
		{Name: "soak", Kind: check.KindSoak, Dir: "pass/soak", Manifest: wantData,
			Soak: &check.SoakParams{Workers: soakWorkers, DurationSec: int(dur / time.Second), Read: "rafs/data", Handshake: true}},
	}
	hs := &soakHandshake{t: t, api: api}
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdinR.Close()
	defer stdinW.Close()
	hs.reply = stdinW
	res, err := Run(context.Background(), RunOptions{
		Guest: g, Backend: backend, BeforeGuest: before,
		Serve: BackendConfig{Vars: map[string]string{"apisock": apiSock}},
		Config: check.Config{Steps: steps, StepTimeoutSec: int(dur/time.Second) + 120,
			UmountTimeoutSec: 60},
		Console: hs, Stdin: stdinR,
		LogDir: logDir(t), Timeout: dur + 4*time.Minute,
	})
	hs.wait()
	if err != nil {
		t.Fatal(err)
	}
	logRun(t, res)
	if err := Verify(res, steps); err != nil {
		t.Errorf("%v\n%s", err, res.Tails(30))
	}
	for _, e := range hs.errs() {
		t.Error(e)
	}
	for _, e := range check.OverlayOnHost(share, filepath.Join(share, "ovl"), "user.virtiofs.") {
		t.Error(e)
	}
	r := res.Result("soak")
	if r == nil || !r.OK {
		return
	}
	rounds := 0
	for i := range soakWorkers {
		n, err := check.CountJournal(filepath.Join(share, "soak", fmt.Sprintf("w%d", i), check.SoakJournal))
		if err != nil {
			t.Errorf("worker %d: %v", i, err)
		}
		rounds += n
	}
	if float64(rounds) != r.Metrics["rounds"] || rounds == 0 {
		t.Errorf("journals on the host hold %d rounds, the guest reported %v", rounds, r.Metrics["rounds"])
	}
	b, a := hs.samples[check.SoakBaseline], hs.samples[check.SoakAfter]
	if b == nil || a == nil {
		return
	}
	reqs := a.requests() - b.requests()
	t.Logf("guest soak: %d workers, %.1f s, %d rounds, %.0f guest ops (guest p50 %.0f µs, p99 %.0f µs, max %.0f µs); "+
		"%.0f FUSE requests (%.0f/s), daemon p99 %s; goroutines %d -> %d, fds %d -> %d (/proc %d -> %d), RSS %.1f -> %.1f MiB",
		soakWorkers, r.Metrics["workload_secs"], rounds, r.Metrics["ops"], r.Metrics["p50_us"], r.Metrics["p99_us"], r.Metrics["max_us"],
		reqs, reqs/r.Metrics["workload_secs"], fmtSecs(a.latencyQuantile(b, 0.99)),
		b.goroutines, a.goroutines, b.fds, a.fds, b.procFDs, a.procFDs, b.rss/(1<<20), a.rss/(1<<20))
	t.Logf("daemon memory before -> after: RSS anon %.1f -> %.1f MiB, file %.1f -> %.1f MiB, shmem (guest RAM touched) %.1f -> %.1f MiB; Go heap in use %.1f -> %.1f MiB",
		b.rssAnon/1024, a.rssAnon/1024, b.rssFile/1024, a.rssFile/1024, b.rssShmem/1024, a.rssShmem/1024, b.heapInuse/(1<<20), a.heapInuse/(1<<20))
	if reqs < r.Metrics["ops"] {
		t.Errorf("the daemon counted %.0f requests during the soak, fewer than the guest's %.0f operations", reqs, r.Metrics["ops"])
	}
}

// overlayGuest builds the guest with overlayfs.
func overlayGuest(t *testing.T) *Guest {
	t.Helper()
	if testing.Short() {
		t.Skip("guest tests boot QEMU guests: skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := EnsureHost(ctx, logrus.StandardLogger()); err != nil {
		testenv.Skipf(t, "guest tests cannot run here: %v", err)
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	g, err := BuildGuest(ctx, BuildOptions{ModuleRoot: root, CacheDir: filepath.Join(root, "guest-tests", ".cache"),
		ExtraModules: []string{"overlay"}})
	if err != nil {
		t.Fatalf("building the guest: %v", err)
	}
	return g
}

// localfsRafsConfig is a nydusd v1 config reading blobs from dir, with a
// blob cache in cacheDir.
func localfsRafsConfig(dir, cacheDir string) string {
	b, _ := json.Marshal(map[string]any{
		"device": map[string]any{
			"backend": map[string]any{"type": "localfs", "config": map[string]any{"dir": dir}},
			"cache":   map[string]any{"type": "blobcache", "config": map[string]any{"work_dir": cacheDir}},
		},
		"mode": "direct", "digest_validate": true, "enable_xattr": true,
	})
	return string(b)
}

// soakAPI talks to the daemon's API socket; every call is a new
// connection, so that the samples see the same number of API connections.
type soakAPI struct {
	sock string
	c    *http.Client
}

func newSoakAPI(sock string) soakAPI {
	return soakAPI{sock: sock, c: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}}
}

func (a soakAPI) mount(ctx context.Context, at, typ, source, config string) error {
	body, _ := json.Marshal(map[string]string{"fs_type": typ, "source": source, "config": config})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://localhost/api/v1/mount?mountpoint="+url.QueryEscape(at),
		bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return fmt.Errorf("mount %s: %w", at, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("mount %s (%s): HTTP %d: %s", at, typ, resp.StatusCode, msg)
	}
	return nil
}

// daemonSample is the daemon's state at one point.
type daemonSample struct {
	goroutines, fds, procFDs int
	rss                      float64
	inflight                 float64
	// What the RSS is made of (/proc/PID/status, KiB: anonymous memory,
	// mapped files, shared memory such as the guest RAM the daemon has
	// touched) and the Go heap in use, in bytes.
	rssAnon, rssFile, rssShmem float64
	heapInuse                  float64
	fams                       map[string]*dto.MetricFamily
}

func (a soakAPI) sample() (*daemonSample, error) {
	resp, err := a.c.Get("http://localhost/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: HTTP %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	s := &daemonSample{fams: fams, procFDs: -1}
	gauge := func(name string) float64 {
		var v float64
		if f := fams[name]; f != nil {
			for _, m := range f.GetMetric() {
				v += m.GetGauge().GetValue()
			}
		}
		return v
	}
	s.goroutines = int(gauge("go_goroutines"))
	s.fds = int(gauge("process_open_fds"))
	s.rss = gauge("process_resident_memory_bytes")
	s.inflight = gauge("nydus_virtiofsd_virtqueue_inflight_requests")
	s.heapInuse = gauge("go_memstats_heap_inuse_bytes")
	if pid := servingPid(a.sock); pid > 0 {
		if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
			s.procFDs = len(ents)
		}
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			for _, l := range strings.Split(string(st), "\n") {
				for name, dst := range map[string]*float64{"RssAnon:": &s.rssAnon, "RssFile:": &s.rssFile, "RssShmem:": &s.rssShmem} {
					if v, ok := strings.CutPrefix(l, name); ok {
						*dst, _ = strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
					}
				}
			}
		}
	}
	return s, nil
}

// requests is the number of FUSE requests served so far.
func (s *daemonSample) requests() float64 {
	var n float64
	if f := s.fams["nydus_virtiofsd_fuse_requests_total"]; f != nil {
		for _, m := range f.GetMetric() {
			n += m.GetCounter().GetValue()
		}
	}
	return n
}

// buckets sums the request latency histograms of every opcode.
func (s *daemonSample) buckets() map[float64]uint64 {
	out := map[float64]uint64{}
	if f := s.fams["nydus_virtiofsd_fuse_request_duration_seconds"]; f != nil {
		for _, m := range f.GetMetric() {
			h := m.GetHistogram()
			for _, b := range h.GetBucket() {
				if !math.IsInf(b.GetUpperBound(), 1) {
					out[b.GetUpperBound()] += b.GetCumulativeCount()
				}
			}
			out[math.Inf(1)] += h.GetSampleCount()
		}
	}
	return out
}

// latencyQuantile is the upper bound of the bucket holding quantile q of
// the requests served between base and s.
func (s *daemonSample) latencyQuantile(base *daemonSample, q float64) float64 {
	now, was := s.buckets(), base.buckets()
	bounds := make([]float64, 0, len(now))
	for b := range now {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	total := now[math.Inf(1)] - was[math.Inf(1)]
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	for _, b := range bounds {
		if now[b]-was[b] >= rank {
			return b
		}
	}
	return math.Inf(1)
}

func fmtSecs(s float64) string {
	if math.IsInf(s, 1) {
		return "> the largest bucket"
	}
	return "≤ " + time.Duration(s*float64(time.Second)).String()
}

// servingPid is the process serving the API socket: the deepest process
// whose command line names it.
func servingPid(apiSock string) int {
	ents, _ := os.ReadDir("/proc")
	parents := map[int]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cl, []byte(apiSock)) {
			continue
		}
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		// "pid (comm) state ppid ..."; comm may hold spaces
		if i := bytes.LastIndexByte(st, ')'); i > 0 {
			f := strings.Fields(string(st[i+1:]))
			if len(f) > 1 {
				parents[pid], _ = strconv.Atoi(f[1])
			}
		}
	}
	for pid := range parents {
		child := false
		for _, pp := range parents {
			if pp == pid {
				child = true
			}
		}
		if !child {
			return pid
		}
	}
	return 0
}

// creatorThreads is how many goroutines the daemon may hold after the
// soak beyond its baseline: the passthrough share's pool of threads that
// create files with the caller's credentials grows with concurrent
// creations up to 4 (passthrough's maxCreators) and lives as long as the
// mount. A 5-minute run ended with 3 more goroutines than its baseline,
// and the goroutine dump showed those three creator threads.
const creatorThreads = 4

// soakHandshake is the host's side of the soak's console handshake: on
// each SOAK_* event it samples the daemon (after the workload: until the
// goroutines, fds and in-flight requests are back to the baseline, or 20 s,
// then SIGQUIT for a goroutine dump) and answers "go" on the guest's
// console.
type soakHandshake struct {
	t     *testing.T
	api   soakAPI
	reply io.Writer

	mu      sync.Mutex
	buf     []byte
	pending sync.WaitGroup
	samples map[string]*daemonSample
	errList []string
}

// Write receives the guest's console, line by line or in pieces.
func (h *soakHandshake) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf = append(h.buf, p...)
	for {
		i := bytes.IndexByte(h.buf, '\n')
		if i < 0 {
			break
		}
		line := string(h.buf[:i])
		h.buf = h.buf[i+1:]
		ev, ok := strings.CutPrefix(strings.TrimSpace(line), check.MarkHarness)
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(ev, " ")
		if name == check.SoakBaseline || name == check.SoakAfter {
			h.pending.Add(1)
			go h.answer(name)
		}
	}
	return len(p), nil
}

func (h *soakHandshake) answer(event string) {
	defer h.pending.Done()
	s, err := h.sampleFor(event)
	h.mu.Lock()
	if h.samples == nil {
		h.samples = map[string]*daemonSample{}
	}
	if err != nil {
		h.errList = append(h.errList, fmt.Sprintf("%s: %v", event, err))
	}
	h.samples[event] = s
	h.mu.Unlock()
	_, _ = io.WriteString(h.reply, "go\n")
}

func (h *soakHandshake) sampleFor(event string) (*daemonSample, error) {
	if event == check.SoakBaseline {
		return h.api.sample()
	}
	h.mu.Lock()
	base := h.samples[check.SoakBaseline]
	h.mu.Unlock()
	if base == nil {
		return nil, fmt.Errorf("no baseline sample")
	}
	var s *daemonSample
	var err error
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		s, err = h.api.sample()
		if err != nil {
			return nil, err
		}
		back := s.goroutines <= base.goroutines+creatorThreads && s.fds == base.fds && s.inflight == 0 &&
			(base.procFDs < 0 || s.procFDs == base.procFDs)
		if back {
			return s, nil
		}
		if time.Now().After(deadline) {
			// SIGQUIT: the Go runtime writes every goroutine's stack to
			// backend.log (and the daemon exits 2)
			dump := "no serving process found for a goroutine dump"
			if pid := servingPid(h.api.sock); pid > 0 && syscall.Kill(pid, syscall.SIGQUIT) == nil {
				dump = "the daemon's goroutines are dumped in backend.log (SIGQUIT)"
			}
			return s, fmt.Errorf("the daemon did not return to its baseline within 20 s of the guest dropping its caches: "+
				"goroutines %d (baseline %d, plus up to %d creator threads), fds %d (%d), /proc fds %d (%d), in flight %.0f; %s",
				s.goroutines, base.goroutines, creatorThreads, s.fds, base.fds, s.procFDs, base.procFDs, s.inflight, dump)
		}
	}
}

func (h *soakHandshake) wait() { h.pending.Wait() }

func (h *soakHandshake) errs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.errList...)
}
