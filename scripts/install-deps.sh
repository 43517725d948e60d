#!/usr/bin/env bash
# Installs the Debian packages that the tests and the demo use, when missing.
# Needs root (as CI and the developers' machines are); otherwise it only says
# what is missing, and the tests that need those tools skip with a reason
# (or fail, under NVFS_REQUIRE_ALL=1, as in CI).
set -euo pipefail
pkgs=(qemu-system-x86 qemu-system-common busybox-static erofs-utils fuse3 attr xz-utils)
# Remote backend tests (internal/testsvc): distribution 2.8's registry,
# htpasswd for its Basic auth, nginx as http-proxy/forward proxy.
pkgs+=(docker-registry apache2-utils nginx-light)
# The guest benchmark's chart (bench/workloads-report.sh).
pkgs+=(gnuplot-nox)
# The observability test scrapes the daemon with a real Prometheus.
pkgs+=(prometheus)
# TestQEMUOneCPUElidesGuestBarriers assembles a tiny multiboot kernel (as, ld).
pkgs+=(binutils)
# The S3 server of those tests is npm's s3rver (MinIO's server is AGPL).
if ! command -v s3rver >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v npm >/dev/null 2>&1; then
		npm install -g --no-fund --no-audit s3rver@3.7.1
	else
		echo "install-deps: s3rver missing (npm install -g s3rver@3.7.1)" >&2
	fi
fi
missing=()
for p in "${pkgs[@]}"; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	[ "$st" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: not root; missing: ${missing[*]}" >&2
	exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
