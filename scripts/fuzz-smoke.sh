#!/usr/bin/env bash
# Runs every go test -fuzz target in the module briefly (FUZZTIME, default 5s)
# after its seed corpus. Go allows one fuzz target per invocation.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-5s}
n=0
while IFS=: read -r file name; do
	pkg="./$(dirname "$file")"
	echo "fuzz: $pkg $name ($FUZZTIME)"
	go test -run "^$" -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 1s "$pkg"
	n=$((n + 1))
done < <(git ls-files '*_test.go' | xargs grep -oE '^func Fuzz[A-Za-z0-9_]+' | sed -E 's/func //' | sort)
echo "fuzz: $n targets run"
