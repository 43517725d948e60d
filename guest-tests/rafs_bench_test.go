package guesttests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
)

// rereadSize is the file the benchmark reads twice.
const rereadSize = 64 << 20

// rereadReads is how many times the guest reads it: a cold read, then
// re-reads, each after a close.
const rereadReads = 4

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
// machine's load. One check.KindReread step per boot does the reads and
// checks the premise between the first two: after a close and reopen,
// every page of the file is still cached with the image and none is with
// cache=auto. Reported (medians over iterations): the MB/s of the
// second read (*_reread_MB/s), of the first (*_cold_MB/s), of the median
// re-read (*_reread_med_MB/s), and x_vs_c_auto, the median of the
// iterations' rafs/c_auto second-read ratios (target ≥ 3).
//
// Use -benchtime 1x with -count N for N pairs (-benchtime Nx first runs
// one extra pair with b.N = 1):
//
//	go test ./guest-tests/ -run '^$' -bench GuestRAFSReread -benchtime 1x -count 5
func BenchmarkGuestRAFSReread(b *testing.B) {
	oneGuestShape(b)
	env := setupGuests(b)
	daemon := rafsDaemon(b)
	viaVirtiofsd, _ := rafsBackends(daemon)
	tree := filepath.Join(b.TempDir(), "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := writeSeeded(filepath.Join(tree, "big.bin"), 64, rereadSize); err != nil {
		b.Fatal(err)
	}
	out := b.TempDir()
	boot, _, err := builder.BuildDir(tree, out, builder.Options{})
	if err != nil {
		b.Fatal(err)
	}
	rows := []struct {
		name    string
		backend Backend
		serve   BackendConfig
		cache   string // what must survive close and reopen
	}{
		{"c_auto", CVirtiofsd(), BackendConfig{SharedDir: tree, Cache: "auto"}, check.CacheDropped},
		{"rafs", viaVirtiofsd, BackendConfig{Vars: imageVars(boot, out)}, check.CacheKept},
	}
	metrics := map[string][]float64{}
	for i := 0; i < b.N; i++ {
		second := map[string]float64{}
		for _, row := range rows {
			reads, err := rereadOnce(b, env.guest, row.backend, row.serve, row.cache)
			if err != nil {
				b.Fatalf("%s: %v", row.name, err)
			}
			re := reads[1:]
			second[row.name] = reads[1]
			metrics[row.name+"_cold_MB/s"] = append(metrics[row.name+"_cold_MB/s"], reads[0])
			metrics[row.name+"_reread_MB/s"] = append(metrics[row.name+"_reread_MB/s"], reads[1])
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

// rereadOnce boots the guest once against backend and returns the MB/s of
// each read, in order.
func rereadOnce(b *testing.B, g *Guest, backend Backend, serve BackendConfig, cache string) ([]float64, error) {
	steps := []check.Step{{Name: "reread", Kind: check.KindReread, File: "big.bin", Reps: rereadReads, Cache: cache}}
	res, err := Run(context.Background(), RunOptions{
		Guest: g, Backend: backend, Serve: serve,
		Config:  check.Config{Opts: "ro", Steps: steps},
		LogDir:  logDir(b),
		Timeout: 300 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	if err := Verify(res, steps); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, res.Tails(15))
	}
	m := res.Result("reread").Metrics
	if m["bytes"] != rereadSize {
		return nil, fmt.Errorf("read %.0f bytes, want %d", m["bytes"], rereadSize)
	}
	var reads []float64
	for i := 1; i <= rereadReads; i++ {
		v, ok := m[fmt.Sprintf("MBps_%d", i)]
		if !ok {
			return nil, fmt.Errorf("no MB/s of read %d in %v", i, m)
		}
		reads = append(reads, v)
	}
	return reads, nil
}
