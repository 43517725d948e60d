// Package virtqueue is the device side of virtio split virtqueues over
// guest memory shared by a vhost-user frontend.
//
// GuestMemory holds the guest's RAM as mmapped regions (MAP_SHARED, from the
// fds SET_MEM_TABLE or ADD_MEM_REG carry). The region map is an immutable
// Snapshot swapped atomically, so translating an address takes no lock:
// a reader Acquires the current snapshot (one atomic compare-and-swap) and
// Releases it when done. Regions removed or replaced while requests are in
// flight are unmapped only when the last snapshot (or ring Pin) using them
// is released, so no slice ever points at unmapped memory.
//
// Addresses are translated with strict bounds and overflow checks. A buffer
// that spans two regions adjacent in guest-physical space becomes two
// slices (AppendSlices); rings and indirect tables must lie within one
// region (Slice, UserSlice) and are rejected otherwise. Ring addresses from
// SET_VRING_ADDR are frontend (QEMU process) virtual addresses and are
// translated through each region's user address.
//
// Queue implements the split ring: Pop walks the next available chain
// (following an indirect table, at most queue-size buffer descriptors, so
// loops end), separating device-readable from device-writable buffers into
// a Chain whose slices point straight into guest memory. The walk looks
// up a region only when a buffer leaves the last one used, and buffers
// that continue one another in the same region (the 4 KiB pages of a Linux
// guest's READ buffer, when they are adjacent) become one slice, so the
// reply's preadv gets one iovec instead of hundreds; a chain's buffer
// boundaries carry no meaning in virtio-fs. A malformed chain
// is consumed and reported as a *ChainError; the caller gives it back with
// zero bytes written. Push is safe from many goroutines (a per-queue mutex
// around the used ring) and reports whether the guest wants an interrupt,
// honouring VIRTIO_F_RING_EVENT_IDX (used_event) or NO_INTERRUPT. Kick
// suppression uses avail_event or the NO_NOTIFY flag (DisableNotify,
// EnableNotify).
//
// Cursor walks a chain's buffers as one byte stream, the way a device
// reads a request and writes a reply: copy an object out or in, split off
// the next n bytes, or fill the next bytes from a file with preadv (zero
// copy into guest memory). Every step is clipped to what is left, so
// nothing written through a Cursor can overrun the guest's buffers.
//
// Memory ordering: the guest runs on other CPUs. Ring index fields are read
// and written with single 16-bit accesses, and the order between them and
// the ring contents is enforced with real barriers (fence_*.s: MFENCE or
// DMB on amd64/arm64, sequentially consistent atomics elsewhere), placed
// where Linux's virtio_rmb/wmb/mb go. Everything on the ring is
// little-endian regardless of the host.
//
// This is written by hand because no maintained Go library implements the
// device side of virtqueues over vhost-user shared memory (go-fuse keeps its
// version internal and without SET_MEM_TABLE or GET_VRING_BASE).
package virtqueue
