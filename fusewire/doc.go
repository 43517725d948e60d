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
// scattered. Done is always called. doRead does all of this in one pass
// (filesystem call, then the data into place); writeReply only adds the
// header. Every walk over the chain's buffers goes through
// virtqueue.Cursor (read an object, split, write, fill from a file), and
// the one end-of-file-aware segment loop is fsapi.FillSegments. The
// preadv path allocates nothing: the cursors and their iovec space live
// in the pooled request.
//
// # Why a dispatch table of our own
//
// go-fuse has an experimental request server for byte buffers, but a
// virtio-fs device needs what it cannot give without a shim that would redo
// its work: an INIT reply steered by the guest's limits, an errno (never
// silence) when the reply room is too small, no logging a guest can flood,
// the zero-copy SegmentedResult path, DESTROY and the hiprio queue. So
// requests go through opTable: one row per opcode with its struct sizes,
// name count, payload bound and a handler of a few lines calling the
// RawFileSystem method; framing, bounds, logging and INIT stay in one place
// we test. docs/notes-upstream.md records what the go-fuse version in
// go.mod does in each case.
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
// # Observers
//
// Options.Observer sees every framed request (Begin with its queue, FUSE
// unique, opcode and node id, End with its errno and reply size) on the
// queue worker serving it; Begin may put a trace span into the request's
// context, which ReadContext passes to the filesystem. The observer
// (package metrics) keeps the counters; fusewire itself reads no clock.
//
// Package internal/fuseclient builds requests for tests.
package fusewire
