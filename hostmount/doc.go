// Package hostmount mounts a go-fuse fuse.RawFileSystem (a RAFS image's
// read-only filesystem, or the vfs mount table) on this host through
// /dev/fuse and serves it: the `fuse` subcommand uses it to expose an image
// without a VM, and tests use it to look at a filesystem through the
// kernel's FUSE client. The daemon itself never mounts on the host: guests
// reach filesystems through vhost-user.
package hostmount
