// Package e2e holds in-process end-to-end tests and benchmarks of the whole
// daemon path, with no VMM: testdriver (a fake VMM with guest RAM in memfds
// and split rings) connects to vhostuser.Serve on a unix socket, which hands
// descriptor chains to fusewire.Device, which serves a real filesystem
// (passthrough over a temporary directory, or a real RAFS image from
// rafs/testdata/fixtures).
//
// The tests replay both the QEMU and the cloud-hypervisor vhost-user
// conversations, send FUSE requests built by fusewire/fuseclient through
// real chains laid out in guest memory (reply buffers split into 1-byte,
// 7-byte and 4 KiB descriptors, and indirect tables), and check the bytes
// against the host files or the fixture md5s listed in PROVENANCE.md. They
// also check that garbage FUSE requests get errors (or no reply) while
// later and concurrent requests are served, that four request queues work
// in parallel, that READ and WRITE buffers straddling two guest RAM regions
// work, that FORGET on the hiprio queue drops the node without a reply, and
// that READ of passthrough files and uncompressed RAFS data takes the
// zero-copy path (fusewire.SegmentedResult copied with preadv into guest
// memory; a wrapping RawFileSystem counts the result kinds).
//
// The benchmarks (go test ./e2e -run '^$' -bench .) compare, in the same
// run, sequential 1 MiB READs through the whole path with plain pread
// (splitting the READ's time into stages timed inside the daemon), and
// measure GETATTR round trips with 1 and 4 request queues and RAFS
// lookup/getattr through the path, each against a direct in-process call.
// docs/benchmarks.md records the figures and the commands that made them.
// The daemons here wait and poll as nydus-virtiofsd does by default
// (vhostuser.RecommendedKickWait, RecommendedPollBeforeSleep);
// NVFS_KICK_WAIT and NVFS_POLL_BEFORE_SLEEP override both, to compare
// settings in one run.
//
// The package has no non-test code: everything here is a test.
package e2e
