#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (Apache-2.0) from the Go module proxy into
# /usr/local/bin when it is missing: the S3 server that checks SigV4
# signatures (internal/testsvc.StartSeaweedS3; npm's s3rver accepts any
# secret). Only the tests need it, so `make test` runs this and `make demo`
# does not. The build takes several minutes on two cores (a large module).
# Without root it only says what is missing; the test that needs weed
# skips (or fails, under NVFS_REQUIRE_ALL=1, as in CI).
set -euo pipefail
go=${GO:-go} # the Makefile passes its $(GO)
version=v0.0.0-20261109003541-7506e5f91cd6
command -v weed >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ] || ! command -v "$go" >/dev/null 2>&1; then
	echo "install-seaweedfs: weed missing (root and go are needed to build it: bash scripts/install-seaweedfs.sh)" >&2
	exit 0
fi
# `go install ...@version` refuses a module whose go.mod has replace
# directives, as SeaweedFS's does: build it as the main module instead.
dir=$(cd / && "$go" mod download -json "github.com/seaweedfs/seaweedfs@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] || { echo "install-seaweedfs: could not download github.com/seaweedfs/seaweedfs@$version" >&2; exit 1; }
echo "install-seaweedfs: building weed $version (several minutes)" >&2
(cd "$dir" && "$go" build -trimpath -ldflags='-s -w' -o /usr/local/bin/weed ./weed)
