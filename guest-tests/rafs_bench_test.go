package guesttests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
)

// rereadMark is what guest-tests/cmd/rafsprobe prints before each read's
// JSON (its MarkReread).
const rereadMark = "NVFS-REREAD "

// rereadSize is the file the benchmark reads twice.
const rereadSize = 64 << 20

// rereadReads is how many times the guest reads it: a cold read, then
// re-reads, each after a close.
const rereadReads = 4

// rereadLine is one of the probe's reads.
type rereadLine struct {
	N     int     `json:"n"`
	Bytes int64   `json:"bytes"`
	MBps  float64 `json:"MBps"`
}

// rereadCollector keeps the probe's lines from the serial console.
type rereadCollector struct {
	mu    sync.Mutex
	reads []rereadLine
	bad   []string
	pw    *io.PipeWriter
	done  chan struct{}
}

func newRereadCollector() *rereadCollector {
	pr, pw := io.Pipe()
	c := &rereadCollector{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			// kernel messages may share the line: look for the mark anywhere
			_, js, ok := strings.Cut(sc.Text(), rereadMark)
			if !ok {
				continue
			}
			var r rereadLine
			c.mu.Lock()
			if err := json.Unmarshal([]byte(strings.TrimSpace(js)), &r); err != nil {
				c.bad = append(c.bad, sc.Text())
			} else {
				c.reads = append(c.reads, r)
			}
			c.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	return c
}

// finish waits for every line and returns the reads in order.
func (c *rereadCollector) finish() ([]rereadLine, error) {
	c.pw.Close()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.bad) > 0 {
		return nil, fmt.Errorf("unparsable reread lines: %q", c.bad)
	}
	if len(c.reads) != rereadReads {
		return nil, fmt.Errorf("%d reread lines, want %d", len(c.reads), rereadReads)
	}
	for i, r := range c.reads {
		if r.N != i+1 || r.Bytes != rereadSize {
			return nil, fmt.Errorf("read %d: %+v, want n=%d and %d bytes", i+1, r, i+1, rereadSize)
		}
	}
	return c.reads, nil
}

// BenchmarkGuestRAFSReread reads a 64 MiB file twice in a guest (open,
// read to the end with 1 MiB reads, close; then again, and twice more),
// starting with cold caches. It compares, in the same run and with the same
// guest, the C virtiofsd with cache=auto serving the tree as a directory
// ("c_auto") and our daemon serving a RAFS v6 image built from the same tree
// (uncompressed, "rafs"). An image is immutable, so the daemon answers OPEN
// with FOPEN_KEEP_CACHE and the guest's page cache survives the close;
// cache=auto drops it on every open.
//
// Each iteration boots both, back to back, so that the pair shares the
// machine's load; after the reads, each boot also checks the premise
// (rafsprobe keepcache): after a close and reopen, every page of the file
// is still cached with the image and none is with cache=auto. Reported (medians over iterations): the MB/s of the
// second read (*_reread_MB/s), of the first (*_cold_MB/s), of the median
// re-read (*_reread_med_MB/s), and x_vs_c_auto, the median of the
// iterations' rafs/c_auto second-read ratios (target ≥ 3).
//
// Use -benchtime 1x with -count N for N pairs (-benchtime Nx first runs
// one extra pair with b.N = 1):
//
//	go test ./guest-tests/ -run '^$' -bench GuestRAFSReread -benchtime 1x -count 5
func BenchmarkGuestRAFSReread(b *testing.B) {
	env := setupGuests(b)
	daemon, probe := rafsTools(b)
	viaVirtiofsd, _ := rafsBackends(daemon)
	tree := filepath.Join(b.TempDir(), "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := writeSeeded(filepath.Join(tree, "big.bin"), 64, rereadSize); err != nil {
		b.Fatal(err)
	}
	if err := copyFile(probe, filepath.Join(tree, probeName), 0o755); err != nil {
		b.Fatal(err)
	}
	out := b.TempDir()
	boot, _, err := builder.BuildDir(tree, out, builder.Options{})
	if err != nil {
		b.Fatal(err)
	}
	steps := func(cache string) []check.Step {
		return []check.Step{
			{Name: "reread", Kind: check.KindExec,
				Argv: []string{guestMount + "/" + probeName, "reread", guestMount + "/big.bin", fmt.Sprint(rereadReads)}},
			{Name: "keepcache", Kind: check.KindExec,
				Argv: []string{guestMount + "/" + probeName, "keepcache", guestMount + "/big.bin", cache}},
		}
	}
	rows := []struct {
		name    string
		backend Backend
		serve   BackendConfig
		steps   []check.Step
	}{
		{"c_auto", CVirtiofsd(), BackendConfig{SharedDir: tree, Cache: "auto"}, steps("dropped")},
		{"rafs", viaVirtiofsd, BackendConfig{Vars: imageVars(boot, out)}, steps("kept")},
	}
	metrics := map[string][]float64{}
	for i := 0; i < b.N; i++ {
		second := map[string]float64{}
		for _, row := range rows {
			reads, err := rereadOnce(b, env.guest, row.backend, row.serve, row.steps)
			if err != nil {
				b.Fatalf("%s: %v", row.name, err)
			}
			var re []float64
			for _, r := range reads[1:] {
				re = append(re, r.MBps)
			}
			second[row.name] = reads[1].MBps
			metrics[row.name+"_cold_MB/s"] = append(metrics[row.name+"_cold_MB/s"], reads[0].MBps)
			metrics[row.name+"_reread_MB/s"] = append(metrics[row.name+"_reread_MB/s"], reads[1].MBps)
			metrics[row.name+"_reread_med_MB/s"] = append(metrics[row.name+"_reread_med_MB/s"], check.Median(re))
		}
		ratio := second["rafs"] / second["c_auto"]
		metrics["x_vs_c_auto"] = append(metrics["x_vs_c_auto"], ratio)
		b.Logf("iteration %d: second read rafs %.0f MB/s, c_auto %.0f MB/s: %.2fx", i+1, second["rafs"], second["c_auto"], ratio)
	}
	b.ReportMetric(0, "ns/op") // a boot's wall time says nothing here
	for name, v := range metrics {
		b.ReportMetric(check.Median(v), name)
	}
}

// rereadOnce boots the guest once against backend and returns the probe's
// reads.
func rereadOnce(b *testing.B, g *Guest, backend Backend, serve BackendConfig, steps []check.Step) ([]rereadLine, error) {
	col := newRereadCollector()
	res, err := Run(context.Background(), RunOptions{
		Guest: g, Backend: backend, Serve: serve,
		Config:  check.Config{Opts: "ro", Steps: steps},
		Console: col.pw,
		LogDir:  logDir(b),
		Timeout: 300 * time.Second,
	})
	reads, cerr := col.finish()
	if err != nil {
		return nil, err
	}
	if err := Verify(res, steps); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, res.Tails(15))
	}
	if cerr != nil {
		return nil, fmt.Errorf("%w\n%s", cerr, res.Tails(15))
	}
	return reads, nil
}
