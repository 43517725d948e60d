#!/usr/bin/env bash
# guest-bench.sh - C virtiofsd against nydus-virtiofsd, from inside a QEMU guest.
#
# One guest boot per backend (and per -benchtime iteration) on the same
# directory (guest-tests/.cache/bench-share-v1: a 256 MiB file and 10,000
# small files) and cache mode, caches dropped in the guest before each
# measurement (3 repetitions, medians):
#   seqread_MB/s    sequential read of the 256 MiB file, 1 MiB reads
#   walk_entries/s  find-like getdents+lstat walk over 10,101 entries (READDIRPLUS)
#   stat_files/s    lstat of the 10,000 files by path, no readdir before (LOOKUPs)
# Prints the benchmark lines and a table with the ratio ours/C (>= 1.0 is the target).
#
# Env: NVFS_BACKENDS (default c,go), NVFS_BENCH_CACHE (default auto),
#      BENCHTIME (default 1x), NVFS_DAEMON (a prebuilt binary; else built).
# Needs root; installs QEMU when missing. Under TCG, compare backends run
# back to back on the same host only (the host's noise is about +-10%).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export NVFS_BACKENDS=${NVFS_BACKENDS:-c,go}
out=$(go test -count=1 -run '^$' -bench '^BenchmarkGuest$' -benchtime "${BENCHTIME:-1x}" -timeout 30m ./guest-tests/ 2>&1) || {
	echo "$out" >&2
	exit 1
}
echo "$out" | grep -E '^(Benchmark|goos|goarch|cpu)' || true
echo
echo "cache=${NVFS_BENCH_CACHE:-auto}"
echo "$out" | awk '
/^BenchmarkGuest\// {
	split($1, a, "/"); name = a[2]; sub(/-[0-9]+$/, "", name)
	order[++n] = name
	for (i = 2; i < NF; i++) {
		if ($(i+1) == "seqread_MB/s") seq[name] = $i
		if ($(i+1) == "walk_entries/s") walk[name] = $i
		if ($(i+1) == "stat_files/s") stat[name] = $i
	}
}
END {
	printf "%-10s %14s %16s %14s\n", "backend", "seqread MB/s", "walk entries/s", "stat files/s"
	for (i = 1; i <= n; i++) {
		b = order[i]
		printf "%-10s %14.1f %16.0f %14.0f\n", b, seq[b], walk[b], stat[b]
	}
	if (("c" in seq) && ("go" in seq) && seq["c"] > 0 && walk["c"] > 0 && stat["c"] > 0)
		printf "%-10s %14.2f %16.2f %14.2f\n", "go/c", seq["go"] / seq["c"], walk["go"] / walk["c"], stat["go"] / stat["c"]
}'
