package guesttests

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/guest-tests/check"
)

// EnvBenchCache names the environment variable with the cache mode the
// benchmark serves with (default auto).
const EnvBenchCache = "NVFS_BENCH_CACHE"

// benchShare returns the benchmark's directory, made once and cached:
// big.bin (256 MiB of seeded random data) and many/ (10,000 small files).
func benchShare(b *testing.B) string {
	b.Helper()
	root, err := ModuleRoot()
	if err != nil {
		b.Fatal(err)
	}
	cache := filepath.Join(root, "guest-tests", ".cache")
	unlock, err := lockCache(cache)
	if err != nil {
		b.Fatal(err)
	}
	defer unlock()
	dir := filepath.Join(cache, "bench-share-v1")
	done := filepath.Join(dir, ".complete")
	if _, err := os.Stat(done); err == nil {
		return dir
	}
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := writeSeeded(filepath.Join(dir, "big.bin"), 256, 256<<20); err != nil {
		b.Fatal(err)
	}
	if err := MakeManyFiles(filepath.Join(dir, "many"), 10000); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkGuest boots one guest per backend and iteration on the same
// directory and cache mode and measures, with cold guest caches (3
// repetitions each, medians): a sequential read of a 256 MiB file
// (seqread_MB/s), a find-like readdir+lstat walk over 10,101 entries
// (walk_entries/s) and an lstat by path of the 10,000 files with no readdir
// before (stat_files/s, one LOOKUP each). bench/guest-bench.sh prints the
// table with the ratios. Run it with -run '^$' -bench Guest -benchtime 1x.
func BenchmarkGuest(b *testing.B) {
	env := setupGuests(b)
	share := benchShare(b)
	cache := os.Getenv(EnvBenchCache)
	if cache == "" {
		cache = "auto"
	}
	steps := []check.Step{
		{Name: "seqread", Kind: check.KindSeqRead, File: "big.bin", Reps: 3},
		{Name: "statwalk", Kind: check.KindStatWalk, Dir: "many", Reps: 3},
	}
	for _, s := range env.backends {
		b.Run(s.Backend.Name, func(b *testing.B) {
			if s.Unavailable != nil {
				if s.Requested {
					b.Fatalf("backend %s cannot serve: %v", s.Backend.Name, s.Unavailable)
				}
				testenv.Skipf(b, "backend %s cannot serve yet: %v", s.Backend.Name, s.Unavailable)
			}
			var seq, walk, stat []float64
			for i := 0; i < b.N; i++ {
				res, err := Run(context.Background(), RunOptions{
					Guest: env.guest, Backend: s.Backend,
					Serve:   BackendConfig{SharedDir: share, Cache: cache},
					Config:  check.Config{Opts: "ro", Steps: steps},
					LogDir:  logDir(b),
					Timeout: 300 * time.Second,
				})
				if err != nil {
					b.Fatal(err)
				}
				if err := Verify(res, steps); err != nil {
					b.Fatalf("%v\n%s", err, res.Tails(15))
				}
				seq = append(seq, res.Result("seqread").Metrics["MBps"])
				walk = append(walk, res.Result("statwalk").Metrics["walk_entries_ps"])
				stat = append(stat, res.Result("statwalk").Metrics["stat_files_ps"])
			}
			b.ReportMetric(0, "ns/op") // a boot's wall time says nothing here
			b.ReportMetric(check.Median(seq), "seqread_MB/s")
			b.ReportMetric(check.Median(walk), "walk_entries/s")
			b.ReportMetric(check.Median(stat), "stat_files/s")
		})
	}
}
