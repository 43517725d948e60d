// Package check holds what the host and the guest share in guest-tests: the
// configuration the host hands to the guest's /init, the result lines the
// guest prints on the serial console, and the checks themselves (a manifest
// of a tree, the guest's mutations, xattr operations, benchmark loops).
//
// The same code runs on both sides: the host builds a manifest of the tree it
// shares and the guest builds one of what it sees through virtio-fs, and the
// two are compared field by field (type, mode, uid/gid, size, link count,
// mtime with nanoseconds, device number, checksum, symlink target,
// hard-link identity, user.* xattrs). The
// mutations are applied once on the host to a reference copy (giving the
// expected state) and once by the guest through the backend; the host then
// compares the two trees. Everything here builds with CGO_ENABLED=0 and uses
// only the standard library and golang.org/x/sys/unix.
//
// System calls: the walks and reads (Build, SeqRead, StatWalk, Reread) use
// raw system calls only in the guest, where guestinit is built with the
// GuestTag build tag; everywhere else they use ordinary ones. The rule:
// never a raw call that can block on a FUSE mount in a process that may
// also serve it (a host test mounting an image with go-fuse), since the
// blocked thread keeps its P and the server can no longer run (sys.go says
// why the guest wants them anyway). TestBuildInProcessFUSE holds the host
// build to it.
package check
