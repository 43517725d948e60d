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
#      (default auto), OUT (directory for the .tsv, .tsv.cpu (each boot's
#      daemon CPU seconds) and .png, default
#      guest-tests/.cache/bench-workloads). Needs root, QEMU, gnuplot.
#      VARIANTS="NAME[:ARG,ARG...] ..." compares builds of our daemon's
#      options in the same run: per iteration, each variant (the order
#      rotating between iterations) gets its own alternated set of boots
#      against the C virtiofsd, with ARGs added to our daemon's command
#      line, or to its environment for ARGs of the form VAR=VALUE (e.g.
#      VARIANTS="default inline:--kick-wait=inline p1:GOMAXPROCS=1"); each
#      variant's figures and chart go to OUT/NAME/.
#      NVFS_BENCH_PAIRED=1 boots one guest per iteration and setting instead,
#      the share served to it by both daemons on two virtio-fs devices, and
#      measures every figure 5 times on each, the two measurements of a
#      pair back to back (A B, then B A, ...; the sequential read A B B A,
#      each daemon's figure the mean of its two): both daemons meet the
#      same host within seconds and the same boot. The figures keep the same
#      format (one row per daemon and boot, each a median of its 5 runs);
#      OUT/runs.tsv.pairs has each pair's ratio ours/C, and the summary's
#      "go/c pairs" rows (and the chart) their medians.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${OUT:-guest-tests/.cache/bench-workloads}
mkdir -p "$out"
out=$(cd "$out" && pwd)
export NVFS_BACKENDS=${NVFS_BACKENDS:-c,go}

# run ITERATIONS TSV: one go test of BenchmarkGuestWorkloads.
run() {
	local log
	log=$(NVFS_BENCH_ITERATIONS=$1 NVFS_BENCH_OUT=$2 go test -count=1 -run '^$' -bench '^BenchmarkGuestWorkloads$' -benchtime 1x -timeout 120m ./guest-tests/ 2>&1) || {
		echo "$log" >&2
		exit 1
	}
	echo "$log" | grep -E '^(Benchmark|goos|goarch|cpu)' || true
}

if [ -z "${VARIANTS:-}" ]; then
	rm -f "$out/runs.tsv.pairs"
	run "${ITERATIONS:-3}" "$out/runs.tsv"
	bench/workloads-report.sh "$out/runs.tsv" "$out"
	echo "daemon CPU per boot (user + system seconds):"
	column -t -s $'\t' "$out/runs.tsv.cpu"
	exit 0
fi

bin=${NVFS_DAEMON:-$out/nydus-virtiofsd}
if [ -z "${NVFS_DAEMON:-}" ]; then
	go build -o "$bin" ./cmd/nydus-virtiofsd
fi
read -r -a variants <<<"$VARIANTS"
for v in "${variants[@]}"; do
	name=${v%%:*}
	env="" args=""
	if [ "$name" != "$v" ]; then
		IFS=, read -r -a list <<<"${v#*:}"
		for a in "${list[@]}"; do
			case $a in
			-*) args+=" $(printf '%q' "$a")" ;;
			*=*) env+=" $(printf '%q' "$a")" ;;
			esac
		done
	fi
	mkdir -p "$out/$name"
	# The daemon the guest tests start: our binary with the variant's
	# arguments (VAR=VALUE ones go to its environment).
	{
		echo '#!/bin/sh'
		echo "exec /usr/bin/env$env $(printf '%q' "$bin")$args"' "$@"'
	} >"$out/$name/daemon"
	chmod +x "$out/$name/daemon"
	rm -f "$out/$name/runs.tsv" "$out/$name/runs.tsv.cpu" "$out/$name/runs.tsv.pairs"
done
n=${#variants[@]}
for ((i = 1; i <= ${ITERATIONS:-3}; i++)); do
	for ((k = 0; k < n; k++)); do
		v=${variants[$(((k + i - 1) % n))]}
		name=${v%%:*}
		# Who boots first alternates between iterations (one go test runs
		# one iteration here, booting in NVFS_BACKENDS's order).
		# FIRST_ORDER=go,c starts with our daemon instead.
		order=${FIRST_ORDER:-c,go}
		[ $((i % 2)) = 0 ] && order=$([ "$order" = c,go ] && echo go,c || echo c,go)
		echo "iteration $i: $name ($order)" >&2
		rm -f "$out/$name/one.tsv.pairs"
		NVFS_BACKENDS=$order NVFS_DAEMON=$out/$name/daemon run 1 "$out/$name/one.tsv"
		if [ ! -s "$out/$name/runs.tsv" ]; then head -1 "$out/$name/one.tsv" >"$out/$name/runs.tsv"; fi
		awk -F'\t' -v OFS='\t' -v i="$i" 'NR > 1 { $1 = i; print }' "$out/$name/one.tsv" >>"$out/$name/runs.tsv"
		if [ ! -s "$out/$name/runs.tsv.cpu" ]; then head -1 "$out/$name/one.tsv.cpu" >"$out/$name/runs.tsv.cpu"; fi
		awk -F'\t' -v OFS='\t' -v i="$i" 'NR > 1 { $1 = i; print }' "$out/$name/one.tsv.cpu" >>"$out/$name/runs.tsv.cpu"
		if [ -s "$out/$name/one.tsv.pairs" ]; then
			if [ ! -s "$out/$name/runs.tsv.pairs" ]; then head -1 "$out/$name/one.tsv.pairs" >"$out/$name/runs.tsv.pairs"; fi
			awk -F'\t' -v OFS='\t' -v i="$i" 'NR > 1 { $1 = i; print }' "$out/$name/one.tsv.pairs" >>"$out/$name/runs.tsv.pairs"
		fi
	done
done
for v in "${variants[@]}"; do
	name=${v%%:*}
	echo
	echo "=== variant $name ($v)"
	bench/workloads-report.sh "$out/$name/runs.tsv" "$out/$name"
	echo "daemon CPU per boot (user + system seconds):"
	column -t -s $'\t' "$out/$name/runs.tsv.cpu"
done
