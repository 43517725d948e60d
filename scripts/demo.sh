#!/usr/bin/env bash
# make demo: build nydus-virtiofsd, then
#  1. share a sample directory with a QEMU guest that lists it and reads a file;
#  2. serve a real Nydus RAFS v6 image (made by nydus-image 2.2, zstd chunks)
#     to a guest that lists it and reads the start of a file out of it;
#  3. a Nydus image served lazily from a docker-registry started on loopback,
#     driven as Kata's virtio-fs-nydus runtime drives the daemon, into a guest
#     that runs the image's Python program (time to its first line, bytes
#     fetched against the image's size).
# Installs QEMU and the guest kernel on first use (as root); cached after.
# Each part's logs (serial console, backend, QEMU) are kept, replaced by the
# next run, in guest-tests/.cache/demo-logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s build
bin=$PWD/bin/nydus-virtiofsd

echo "== 1. a host directory, as virtiofsd =="
go run ./guest-tests/cmd/demo -backend go

echo
echo "== 2. a Nydus RAFS v6 image, as nydusd =="
img=$PWD/rafs/testdata/fixtures/nydus/v6-2.2
"$bin" check --bootstrap "$img/rafs-v6-2.2.boot" --blob-dir "$img"
go run ./guest-tests/cmd/demo -name nydus-virtiofsd-rafs -file lib.rs \
	-cmd "$bin --socket-path={socket} --bootstrap=$img/rafs-v6-2.2.boot --blob-dir=$img"

echo
echo "== 3. a Nydus image fetched lazily from a registry, as Kata runs it =="
go run ./guest-tests/cmd/demo -lazy "$bin"
