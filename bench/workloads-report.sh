#!/usr/bin/env bash
# workloads-report.sh RUNS.TSV OUTDIR - the table and chart of
# guest-workloads.sh from its per-boot figures: medians per thread-pool
# setting and backend, ratios ours/C, OUTDIR/summary.tsv and
# OUTDIR/ratios.png.
set -euo pipefail
tsv=$1 out=$2
echo
echo "per boot (load1 = host load average when the boot ended):"
column -t -s $'\t' "$tsv"
awk -F'\t' -v OFS='\t' '
function median(s,   n, a, i, j, t) {
	n = split(s, a, " ")
	for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
	return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
NR == 1 { for (i = 5; i <= NF; i++) name[i] = $i; nf = NF; next }
{
	k = $2 SUBSEP $3; tp[$2] = 1; load = load " " $4
	for (i = 5; i <= NF; i++) v[k, i] = v[k, i] " " $i
}
END {
	printf "threads\tbackend"; for (i = 5; i <= nf; i++) printf "\t%s", name[i]; print ""
	for (t in tp) {
		for (bi = 1; bi <= 2; bi++) {
			b = bi == 1 ? "c" : "go"
			printf "%s\t%s", t, b
			for (i = 5; i <= nf; i++) { m[t, b, i] = median(v[t SUBSEP b, i]); printf "\t%.1f", m[t, b, i] }
			print ""
		}
		printf "%s\tgo/c", t
		for (i = 5; i <= nf; i++) printf "\t%.2f", (m[t, "c", i] > 0 ? m[t, "go", i] / m[t, "c", i] : 0)
		print ""
	}
	printf "# load average during the runs: median %.1f\n", median(load)
}' "$tsv" > "$out/summary.tsv"
# The paired mode's ratios per repetition (RUNS.TSV.pairs): their medians,
# a row "go/c pairs" per thread-pool setting, which the chart then shows.
if [ -s "$tsv.pairs" ]; then
	awk -F'\t' -v OFS='\t' '
function median(s,   n, a, i, j, t) {
	n = split(s, a, " ")
	for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
	return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
}
NR == 1 { nf = NF; next }
{ tp[$2] = 1; reps[$2]++; for (i = 4; i <= NF; i++) v[$2, i] = v[$2, i] " " $i }
END {
	for (t in tp) {
		printf "%s\tgo/c pairs", t
		for (i = 4; i <= nf; i++) printf "\t%.2f", median(v[t, i])
		print ""
	}
	for (t in tp) printf "# threads %s: median of %d ratios ours/C, each of one pair of runs back to back in one boot\n", t, reps[t]
}' "$tsv.pairs" >> "$out/summary.tsv"
fi
echo
echo "medians over iterations, and ratios ours/C (target >= 1.00; md5 >= 1.10):"
grep -v '^#' "$out/summary.tsv" | column -t -s $'\t'
grep '^#' "$out/summary.tsv"
# Chart: one group of bars per workload, one bar per thread-pool setting.
awk -F'\t' 'NR == 1 { for (i = 3; i <= NF; i++) h[i] = $i; n = NF; next }
$2 == "go/c" && !pairs[$1] { for (i = 3; i <= n; i++) r[i, $1] = $i; tp[$1] = 1 }
$2 == "go/c pairs" { for (i = 3; i <= n; i++) r[i, $1] = $i; tp[$1] = 1; pairs[$1] = 1 }
END {
	printf "workload"; for (t in tp) printf "\t%s", (t == 0 ? "defaults" : "thread-pool-size=" t); print ""
	for (i = 3; i <= n; i++) { sub(/\/s$/, "", h[i]); printf "%s", h[i]; for (t in tp) printf "\t%s", r[i, t]; print "" }
}' <(grep -v '^#' "$out/summary.tsv") > "$out/ratios.dat"
if command -v gnuplot >/dev/null; then
	load=$(grep '^# load average' "$out/summary.tsv" | sed 's/.*median //')
	what=medians
	if [ -s "$tsv.pairs" ]; then what="medians of the ratios of runs paired in one boot"; fi
	gnuplot <<GP
set terminal pngcairo size 900,480 noenhanced font ",10"
set output "$out/ratios.png"
set title "nydus-virtiofsd / C virtiofsd in a QEMU TCG guest ($what, host load average $load)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel "ratio ours / C (higher is better)"
set yrange [0:*]
set grid ytics
set key outside bottom center horizontal
set xtics rotate by -20
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2 lc rgb "red"
plot for [c=2:*] "$out/ratios.dat" using c:xtic(1) title columnheader
GP
	echo "chart: $out/ratios.png"
else
	echo "gnuplot missing (apt-get install gnuplot-nox): no chart" >&2
fi
