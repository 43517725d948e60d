// Package fusewire serves FUSE over virtio: it takes one virtqueue chain
// (the guest's request in its device-readable buffers, room for the reply
// in its device-writable buffers, all straight into guest memory), frames
// the FUSE request, calls a go-fuse fuse.RawFileSystem and writes the reply
// back into the writable buffers. It knows nothing of vhost-user; Device
// satisfies vhostuser's device interface (NumQueues, Features,
// HandleChain) without importing it.
//
// # Layout of a request
//
// Linux's virtio_fs.c puts fuse_in_header in one buffer, the op's
// non-page arguments (struct, names) in the next and page arguments (WRITE
// data) one buffer per page; the reply room is fuse_out_header, the reply
// struct, then one buffer per page for READ/READDIR data. fusewire does not
// rely on that: any byte may sit in any descriptor. The header and the op
// struct (at most a few hundred bytes) are copied out, so a guest changing
// them behind our back cannot change what was validated. Names and xattr
// values are used in place when contiguous, else gathered; Go strings are
// copies anyway. WRITE data reaches the filesystem as the guest's own
// buffers through RawFileSystem.Writev; a filesystem without Writev gets
// Write on the guest buffer when the payload is one descriptor and on one
// gathered copy otherwise.
//
// # Reads
//
// READ offers the filesystem the guest's data buffer when it is one
// descriptor (a filesystem with fsapi.ContextReader gets the request's
// context too). A result that is a SegmentedResult (fsapi's; FileResult,
// SegmentsResult: a passthrough file, a chunk in the blob cache) is read
// with preadv straight into the writable descriptors, in batches of
// IOV_MAX, stopping at end of file; OutHeader.Len carries the real size.
// go-fuse's fuse.ReadResultFd goes the same way (as one segment), other
// results that can Readv use it. Anything else goes through Bytes, into
// the guest buffer when possible, else into a pooled buffer and then
// scattered. Done is always called. The preadv path allocates nothing: the
// iovec array lives in the pooled request.
//
// # Why not go-fuse's ProtocolServer
//
// go-fuse v2.12 has fuse.NewProtocolServer(fs, opts).HandleRequest(in,
// out), marked experimental. In v2.12.1 it copies the first 128 request
// bytes, so split headers work, and it can preadv into the reply iov. We
// still dispatch with our own table (opTable: one row per opcode with its
// struct sizes, name count, payload bound and handler; each handler is a
// few lines calling the RawFileSystem method) because the ProtocolServer
// cannot meet the virtio-fs rules without a shim that would redo its work:
//   - Its INIT reply cannot be steered: MaxPages comes from MaxWrite capped
//     by the host's /proc/sys/fs/fuse/max_pages_limit (the guest's limit is
//     what matters), the minor is capped at go-fuse's 7.28, and
//     READDIRPLUS_AUTO, ATOMIC_O_TRUNC and EXPORT_SUPPORT are only offered
//     through ExtraCapabilities.
//   - It answers a reply room smaller than the op's struct and data with no
//     reply at all; a guest waiting for that reply would hang. We reply
//     with an errno whenever there is room for a header.
//   - It logs every malformed request through the global log package
//     (parseRequest, doInit), which a hostile guest can flood; it keeps
//     per-request interrupt bookkeeping behind one mutex for INTERRUPTs a
//     virtio-fs guest never sends (virtio_fs.c leaves them a TODO).
//   - A SegmentedResult (our zero-copy contract) would have to grow a
//     Readv method to reach its preadv path, and it cannot report DESTROY
//     or tell hiprio from request queues.
//
// The table costs about as many lines as that shim and leaves framing,
// bounds, logging and INIT in one place we test.
//
// # virtio-fs rules
//
// FORGET, BATCH_FORGET and INTERRUPT get no reply (0 bytes), on the hiprio
// queue 0 where Linux sends forgets and on any other. FORGET of the root is
// ignored (the kernel never sends it; go-fuse's NodeFS deadlocks on it).
// SETUPMAPPING and REMOVEMAPPING (DAX), BMAP, POLL and COPY_FILE_RANGE_64
// answer ENOSYS, as do unknown opcodes; SYNCFS calls the filesystem's
// SyncFS when it has one (SyncFSer), else ENOSYS, which the guest takes as
// "nothing to do". Requests other than INIT before INIT (or after DESTROY)
// get EIO. INIT offers what the C virtiofsd does (ASYNC_READ,
// ATOMIC_O_TRUNC, EXPORT_SUPPORT, BIG_WRITES, AUTO_INVAL_DATA,
// READDIRPLUS(_AUTO), ASYNC_DIO, PARALLEL_DIROPS, MAX_PAGES), plus
// SUBMOUNTS when Options.AnnounceSubmounts and whatever Options.Mount asks
// for, never splice, passthrough or DAX; max_write 1 MiB, max_pages 256,
// max_readahead as proposed, time_gran 1, minor min(kernel, MaxMinor).
// RawFileSystem.Init is not called: it takes the *fuse.Server of a
// /dev/fuse mount, which does not exist here (go-fuse's ProtocolServer
// does not call it either).
//
// # Hostile guests
//
// Every length comes from our copy of the header and is checked against the
// buffers: a request shorter than fuse_in_header, or with no room for a
// reply header, is dropped; a len field that disagrees with the buffers, a
// name without NUL, a name with a slash, a payload over its op's bound, a
// READ/READDIR over 16 MiB, an xattr size over 72 KiB or an IOCTL output
// over 1 MiB get EINVAL; a truncated op struct EIO; a reply
// (or requested READ/READDIR/xattr size) larger than the writable room
// ERANGE. Nothing is written past the writable buffers, and a panic in the
// filesystem becomes EIO. Violations are logged once a second at most as
// warnings (with request id, unique, opcode, nodeid and queue), the rest at
// debug level.
//
// Package fusewire/fuseclient builds requests for tests.
package fusewire
