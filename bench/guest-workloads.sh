#!/usr/bin/env bash
# guest-workloads.sh - issue 15's workload set, C virtiofsd against
# nydus-virtiofsd, from inside QEMU guests, runs alternated.
#
# Runs BenchmarkGuestWorkloads (guest-tests/): per iteration, per
# --thread-pool-size setting (NVFS_BENCH_THREADS, default "1,0": Kata's 1,
# then the daemons' defaults), one guest boot per backend, the backends
# alternated (and who goes first alternates between iterations) so both
# see the same host load. Each boot measures, medians of 3 repetitions:
#   seqread_MB/s          cold sequential read of a 256 MiB file, 1 MiB reads
#   find_cold_entries/s   find-like walk (getdents + lstat) of 10,101 entries, caches dropped
#   find_warm_entries/s   the same walk again, caches kept
#   stat_files/s          lstat of the 10,000 files by path, caches dropped (LOOKUPs)
#   md5_files/s           open+read+MD5 of the 10,000 small files, caches dropped
# Then prints the per-boot figures with the host's load average, the medians
# over iterations and the ratios ours/C (target >= 1.0, md5 >= 1.1), and
# draws them as a PNG chart (gnuplot).
#
# Env: ITERATIONS (default 3), NVFS_BENCH_THREADS, NVFS_BENCH_CACHE
#      (default auto), OUT (directory for the .tsv and .png, default
#      guest-tests/.cache/bench-workloads). Needs root, QEMU, gnuplot.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-guest-tests/.cache/bench-workloads}
mkdir -p "$out"
out=$(cd "$out" && pwd)
tsv=$out/runs.tsv
export NVFS_BACKENDS=${NVFS_BACKENDS:-c,go} NVFS_BENCH_OUT=$tsv
export NVFS_BENCH_ITERATIONS=${ITERATIONS:-3}
log=$(go test -count=1 -run '^$' -bench '^BenchmarkGuestWorkloads$' -benchtime 1x -timeout 120m ./guest-tests/ 2>&1) || {
	echo "$log" >&2
	exit 1
}
echo "$log" | grep -E '^(Benchmark|goos|goarch|cpu)' || true
bench/workloads-report.sh "$tsv" "$out"
