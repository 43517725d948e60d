// Package vfs is the mount table: a fuse.RawFileSystem with a pseudo root
// of synthetic, read-only directories under which other filesystems
// (passthrough shares, RAFS images) are mounted at paths, as nydusd's VFS
// does (fuse-backend-rs Vfs). Kata's runtimes use it through the nydusd API
// to put the sandbox's shared directory at /containers and each container
// image at /rafs/<cid>/lowerdir of one virtio-fs device, while the guest
// runs.
//
// Inode numbers are namespaced as in nydusd: a mounted filesystem's node
// id n becomes index<<56 | n (index 1..255, handed out round-robin so a
// freed index is reused as late as possible); index 0 is the pseudo
// filesystem. Attribute inode numbers (st_ino) are namespaced the same way
// so they stay unique across mounts; a filesystem mounted at "/" keeps its
// own st_ino and answers for node id 1. File handles need no namespacing:
// every request that carries one also carries the node id it belongs to,
// and requests are routed by node id.
//
// The table is an immutable snapshot behind an atomic pointer, replaced
// whole on mount and umount, so a request takes no lock: it loads the
// snapshot, indexes the mount by the top byte of its node id and takes a
// reference on it (one atomic compare-and-swap). The reference is held
// until the call returns, or, for a zero-copy read result (file segments),
// until the transport calls Done, so an unmounted filesystem is closed
// only after the last byte of its last read has been copied: the fds a
// segment names stay open for as long as the contract in fusewire says.
// Requests for a node of a gone mount get ENOENT.
//
// Pseudo directories are made as mounts need them and removed when the
// last mount beneath goes; their node ids are never reused. The guest may
// cache them and mount-point entries for Options.EntryTimeout (1 s by
// default). A filesystem's root is asked for its attributes only, never
// looked up, so FORGETs of it are passed on and ignored, as for the root
// of a filesystem served alone.
//
// Written by hand: go-fuse's own path-based mounting (fs.Inode submounts)
// lives in its node API, not at the RawFileSystem level fusewire serves.
package vfs
