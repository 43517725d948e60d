// Package guesttests proves virtio-fs backends from inside real Linux guests
// under QEMU (TCG), and holds the harness other tests reuse.
//
// The guest is Debian's linux-image-amd64 (resolved to its ABI package,
// fetched with apt-get download and unpacked with dpkg-deb -x, never
// installed), booted through its PVH entry from the vmlinux inside the
// bzImage, with an initramfs holding the seven virtio/fuse/virtiofs modules
// (dependencies read from each .ko's modinfo) and guestinit, a static Go
// /init. Everything is cached in guest-tests/.cache keyed by its inputs.
// Per run, a second cpio with /harness/config.json is appended to the
// initramfs; the guest prints "@@RESULT {json}" per step and "@@END rc=N"
// on the serial console, unmounts under a watchdog and powers off.
//
// Backends are table entries (Backends): a name, a probe and a function
// building the *exec.Cmd that serves a BackendConfig. CVirtiofsd is the
// reference; GoDaemon is nydus-virtiofsd; Template runs any command line
// with {socket}/{share}/{cache}/{NAME} placeholders (image backends).
// NVFS_BACKENDS=c,go picks backends (default: those whose probe passes;
// named ones must pass). NVFS_ARTIFACTS=DIR keeps every run's logs, one
// numbered directory per boot (DIR/<test>-1, -2, ...).
//
// Run starts the backend in its own process group, waits for its socket,
// boots QEMU with a timeout, parses the console, and kills only the groups
// it started. Verify turns a run into an error (failed steps, unclean
// umount, backend not exiting 0 by itself). ReadOnlyCheck is the image
// check: "ro" mount, manifest comparison, EROFS on writes.
//
// The newc cpio writer is hand-written: an initramfs needs four entry kinds
// and a trailer (about 60 lines), which does not justify a dependency.
package guesttests
