package guesttests

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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

// oneGuestShape gives every guest of a comparison between backends the
// same -smp: the C virtiofsd's guests run with "1,maxcpus=2"
// (CVirtiofsd), so unless NVFS_GUEST_SMP says otherwise ours do too.
func oneGuestShape(b *testing.B) {
	if os.Getenv(EnvGuestSMP) == "" {
		b.Setenv(EnvGuestSMP, CVirtiofsd().GuestSMP)
	}
}

// BenchmarkGuest boots one guest per backend and iteration on the same
// directory and cache mode and measures, with cold guest caches (3
// repetitions each, medians): a sequential read of a 256 MiB file
// (seqread_MB/s), a find-like readdir+lstat walk over 10,101 entries
// (walk_entries/s) and an lstat by path of the 10,000 files with no readdir
// before (stat_files/s, one LOOKUP each). bench/guest-bench.sh prints the
// table with the ratios. Run it with -run '^$' -bench Guest -benchtime 1x.
func BenchmarkGuest(b *testing.B) {
	oneGuestShape(b)
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

// EnvBenchThreads names the environment variable listing the
// --thread-pool-size settings BenchmarkGuestWorkloads compares (comma
// separated; 0 is each daemon's default, 1 is what Kata passes). Default
// "1,0".
const EnvBenchThreads = "NVFS_BENCH_THREADS"

// EnvBenchIterations names the environment variable with the number of
// iterations of BenchmarkGuestWorkloads (default 3).
const EnvBenchIterations = "NVFS_BENCH_ITERATIONS"

// EnvBenchOut names the file BenchmarkGuestWorkloads writes its per-boot
// figures to (tab separated; bench/guest-bench.sh makes the table and the
// chart from it). Default guest-tests/.cache/bench-workloads.tsv.
const EnvBenchOut = "NVFS_BENCH_OUT"

// EnvBenchPaired, set to 1, makes BenchmarkGuestWorkloads serve the share
// through both daemons to one guest per iteration (two virtio-fs devices)
// and alternate the workloads between them inside it, instead of booting
// a guest per daemon: see pairedBoot. Beside the per-boot figures it then
// writes each repetition's ratios ours/C (OUT.pairs) and reports their
// medians (tpN_METRIC_pairs_go/c).
const EnvBenchPaired = "NVFS_BENCH_PAIRED"

// workloadMetrics are the figures of one boot of BenchmarkGuestWorkloads,
// in the order of the table.
var workloadMetrics = []struct{ step, metric, name string }{
	{"seqread", "MBps", "seqread_MB/s"},
	{"metaread", "cold_find_ps", "find_cold_entries/s"},
	{"metaread", "warm_find_ps", "find_warm_entries/s"},
	{"metaread", "stat_files_ps", "stat_files/s"},
	{"metaread", "md5_files_ps", "md5_files/s"},
}

// BenchmarkGuestWorkloads is issue 15's workload set: one guest boot per
// backend, thread-pool setting and iteration, the backends ALTERNATED
// within each iteration (C, ours, C, ours, ...) so that both see the same
// host load, on the same directory (benchShare) and cache mode: a cold
// 256 MiB sequential read, cold and warm find over the 10,101 entries,
// stat by path of the 10,000 files and an MD5 of each of them (check.
// MetaRead). Each boot reports medians of 3 repetitions; the benchmark
// reports, per thread-pool setting and backend, the median over
// iterations, and the ratios ours/C. Run it with -benchtime 1x through
// bench/guest-workloads.sh (NVFS_BENCH_ITERATIONS iterations).
//
// The C virtiofsd of Debian 12 cannot run a thread pool (its pool threads
// die in its own seccomp filter, see CVirtiofsd), so it always runs with
// its default, no pool: requests served on the queue thread, the closest
// to Kata's --thread-pool-size=1. Our daemon gets the setting.
func BenchmarkGuestWorkloads(b *testing.B) {
	oneGuestShape(b)
	env := setupGuests(b)
	share := benchShare(b)
	cache := os.Getenv(EnvBenchCache)
	if cache == "" {
		cache = "auto"
	}
	var threads []int
	for _, f := range strings.Split(cmp.Or(os.Getenv(EnvBenchThreads), "1,0"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			b.Fatalf("%s: bad value %q", EnvBenchThreads, f)
		}
		threads = append(threads, n)
	}
	out := os.Getenv(EnvBenchOut)
	if out == "" {
		root, err := ModuleRoot()
		if err != nil {
			b.Fatal(err)
		}
		out = filepath.Join(root, "guest-tests", ".cache", "bench-workloads.tsv")
	}
	tsv, err := os.Create(out)
	if err != nil {
		b.Fatal(err)
	}
	defer tsv.Close()
	fmt.Fprintf(tsv, "iteration\tthreads\tbackend\tload1")
	for _, m := range workloadMetrics {
		fmt.Fprintf(tsv, "\t%s", m.name)
	}
	fmt.Fprintln(tsv)
	// Beside it, each boot's daemon CPU time (user + system, whole boot):
	// on this 2-core host a daemon's CPU is taken from QEMU's threads.
	cpuTSV, err := os.Create(out + ".cpu")
	if err != nil {
		b.Fatal(err)
	}
	defer cpuTSV.Close()
	fmt.Fprintln(cpuTSV, "iteration\tthreads\tbackend\tdaemon_cpu_s\tboot_wall_s")
	// And the boots that failed and were run again.
	failures, err := os.Create(out + ".failures")
	if err != nil {
		b.Fatal(err)
	}
	defer failures.Close()
	// In the paired mode, each repetition's ratios ours/C (pairedBoot).
	var pairsTSV io.Writer = io.Discard
	paired := os.Getenv(EnvBenchPaired) == "1"
	if paired {
		f, err := os.Create(out + ".pairs")
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		pairsTSV = f
		fmt.Fprintf(f, "iteration\tthreads\trep")
		for _, m := range workloadMetrics {
			fmt.Fprintf(f, "\t%s", m.name)
		}
		fmt.Fprintln(f)
	}
	pairRatios := map[int][][]float64{} // per thread setting and metric

	steps := []check.Step{
		{Name: "seqread", Kind: check.KindSeqRead, File: "big.bin", Reps: 3},
		{Name: "metaread", Kind: check.KindMetaRead, Dir: "many", Reps: 3},
	}
	type key struct {
		threads int
		backend string
	}
	figures := map[key][][]float64{} // per metric, one value per iteration
	for _, s := range env.backends {
		if s.Unavailable != nil {
			if s.Requested {
				b.Fatalf("backend %s cannot serve: %v", s.Backend.Name, s.Unavailable)
			}
			testenv.Skipf(b, "backend %s cannot serve yet: %v", s.Backend.Name, s.Unavailable)
		}
	}
	iterations := 3
	if v := os.Getenv(EnvBenchIterations); v != "" {
		if iterations, err = strconv.Atoi(v); err != nil || iterations < 1 {
			b.Fatalf("%s: bad value %q", EnvBenchIterations, v)
		}
	}
	// Not b.N: the testing package runs a benchmark with N=1 before the
	// N asked for, which would boot the whole set twice.
	for i := 0; i < iterations; i++ {
		for _, tp := range threads {
			order := env.backends
			if i%2 == 1 { // who goes first alternates too
				order = slices.Clone(order)
				slices.Reverse(order)
			}
			// record writes one daemon's figures of one boot (in
			// workloadMetrics' order) and keeps them for the medians.
			record := func(name string, vals []float64, cpu, wall time.Duration) {
				k := key{tp, name}
				if figures[k] == nil {
					figures[k] = make([][]float64, len(workloadMetrics))
				}
				fmt.Fprintf(tsv, "%d\t%d\t%s\t%.2f", i+1, tp, name, loadAverage())
				for j, v := range vals {
					figures[k][j] = append(figures[k][j], v)
					fmt.Fprintf(tsv, "\t%.1f", v)
				}
				fmt.Fprintln(tsv)
				fmt.Fprintf(cpuTSV, "%d\t%d\t%s\t%.3f\t%.1f\n", i+1, tp, name, cpu.Seconds(), wall.Seconds())
			}
			if paired {
				per, ratios, cpu, wall := pairedBoot(b, env, order, tp, share, cache, i, failures)
				for _, s := range order {
					record(s.Backend.Name, per[s.Backend.Name], cpu[s.Backend.Name], wall)
				}
				if pairRatios[tp] == nil {
					pairRatios[tp] = make([][]float64, len(workloadMetrics))
				}
				for r, row := range ratios {
					fmt.Fprintf(pairsTSV, "%d\t%d\t%d", i+1, tp, r+1)
					for j, v := range row {
						pairRatios[tp][j] = append(pairRatios[tp][j], v)
						fmt.Fprintf(pairsTSV, "\t%.3f", v)
					}
					fmt.Fprintln(pairsTSV)
				}
				continue
			}
			for _, s := range order {
				res := runRetried(b, RunOptions{
					Guest: env.guest, Backend: s.Backend,
					Serve:   benchServe(s, tp, share, cache),
					Config:  check.Config{Opts: "ro", Steps: steps},
					LogDir:  logDir(b),
					Timeout: 300 * time.Second, // a boot takes 30-60 s
				}, failures, fmt.Sprintf("%d\t%d\t%s", i+1, tp, s.Backend.Name))
				var vals []float64
				for _, m := range workloadMetrics {
					vals = append(vals, res.Result(m.step).Metrics[m.metric])
				}
				record(s.Backend.Name, vals, res.BackendCPU, res.Wall)
			}
		}
	}
	b.ReportMetric(0, "ns/op") // a boot's wall time says nothing here
	for _, tp := range threads {
		c, g := figures[key{tp, "c"}], figures[key{tp, "go"}]
		for j, m := range workloadMetrics {
			if c != nil && g != nil && check.Median(c[j]) > 0 {
				b.ReportMetric(check.Median(g[j])/check.Median(c[j]), fmt.Sprintf("tp%d_%s_go/c", tp, m.metric))
			}
			if pr := pairRatios[tp]; pr != nil {
				b.ReportMetric(check.Median(pr[j]), fmt.Sprintf("tp%d_%s_pairs_go/c", tp, m.metric))
			}
		}
	}
}

// benchServe is what backend s serves in BenchmarkGuestWorkloads: the
// share, the cache mode, and the thread-pool setting tp, which the C
// virtiofsd cannot take (it always runs with its default, no pool).
func benchServe(s Selected, tp int, share, cache string) BackendConfig {
	if s.Backend.Name == "c" {
		tp = 0
	}
	return BackendConfig{SharedDir: share, Cache: cache, ThreadPoolSize: tp}
}

// runRetried boots opts, once more if that fails, and checks the boot's
// steps. A one-vCPU TCG guest can lose a notification
// (docs/notifications.md), and the C virtiofsd has no recovery: its boot
// then hangs until the timeout. One retry keeps a long comparison going;
// the failure stays in the log and, after what (the boot's columns), in
// failures (OUT.failures).
func runRetried(b *testing.B, opts RunOptions, failures io.Writer, what string) *RunResult {
	b.Helper()
	res, err := Run(context.Background(), opts)
	if err != nil {
		b.Logf("%s: boot failed, retrying once: %v", strings.ReplaceAll(what, "\t", " "), err)
		fmt.Fprintf(failures, "%s\t%v\n", what, err)
		if res, err = Run(context.Background(), opts); err != nil {
			b.Fatal(err)
		}
	}
	if err := Verify(res, opts.Config.Steps); err != nil {
		b.Fatalf("%v\n%s", err, res.Tails(15))
	}
	return res
}

// pairedReps is how many times a paired boot measures each workload on
// each daemon.
const pairedReps = 5

// pairedBoot is one iteration of the paired mode (EnvBenchPaired): one
// guest, the share served by both backends on two virtio-fs devices
// (order[0]'s first), and one check.KindPaired step: each figure measured
// on both mounts back to back, pairedReps times, the order flipping at
// every repetition. Both daemons then see the same host within seconds
// and the same guest boot; alternating boots, the host's swings of a
// minute or more (seen at ±30 % on one daemon's consecutive boots) fall
// on one daemon and not the other, and measuring all of one daemon's
// workloads before the other's (this mode's first version) left 10-20 s
// between the two halves of a pair. It returns per backend the medians
// over the repetitions, in workloadMetrics' order, each repetition's
// ratios go/c (one row per repetition, workloadMetrics' order), each
// daemon's CPU time and the boot's wall time.
func pairedBoot(b *testing.B, env *testEnv, order []Selected, tp int, share, cache string, i int, failures io.Writer) (per map[string][]float64, ratios [][]float64, cpu map[string]time.Duration, wall time.Duration) {
	b.Helper()
	serve := func(s Selected) BackendConfig { return benchServe(s, tp, share, cache) }
	mnt := func(s Selected) string { return "/mnt/" + s.Backend.Name }
	steps := []check.Step{{Name: "paired", Kind: check.KindPaired, File: "big.bin", Dir: "many", Reps: pairedReps,
		Mounts: []string{mnt(order[0]), mnt(order[1])}}}
	opts := RunOptions{
		Guest: env.guest, Backend: order[0].Backend, Serve: serve(order[0]),
		Config: check.Config{Tag: order[0].Backend.Name, Mount: mnt(order[0]), Opts: "ro", Steps: steps,
			Extra:          []check.ExtraMount{{Tag: order[1].Backend.Name, Mount: mnt(order[1])}},
			StepTimeoutSec: 600},
		Extra:   []ExtraBackend{{Backend: order[1].Backend, Serve: serve(order[1]), Tag: order[1].Backend.Name}},
		LogDir:  logDir(b),
		Timeout: 900 * time.Second, // a paired boot takes 3-5 min
	}
	res := runRetried(b, opts, failures, fmt.Sprintf("%d\t%d\tpaired", i+1, tp))
	m := res.Result("paired").Metrics
	at := func(metric string, idx, r int) float64 { return m[fmt.Sprintf("%s/%d/%d", metric, idx, r)] }
	per = map[string][]float64{}
	for idx, s := range order {
		for _, wm := range workloadMetrics {
			var v []float64
			for r := 0; r < pairedReps; r++ {
				v = append(v, at(wm.metric, idx, r))
			}
			per[s.Backend.Name] = append(per[s.Backend.Name], check.Median(v))
		}
	}
	goIdx := slices.IndexFunc(order, func(s Selected) bool { return s.Backend.Name == "go" })
	if goIdx >= 0 {
		for r := 0; r < pairedReps; r++ {
			var row []float64
			for _, wm := range workloadMetrics {
				g, c := at(wm.metric, goIdx, r), at(wm.metric, 1-goIdx, r)
				row = append(row, g/c)
			}
			ratios = append(ratios, row)
		}
	}
	cpu = map[string]time.Duration{order[0].Backend.Name: res.BackendCPU, order[1].Backend.Name: res.ExtraCPU[0]}
	return per, ratios, cpu, res.Wall
}

// loadAverage is the host's 1-minute load average (0 if unknown).
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
