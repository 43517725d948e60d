// Package ring holds the memory-access primitives of a split virtqueue
// that both of its sides need: the device side (package virtqueue) and the
// test frontend that plays the guest driver (internal/testdriver). They are
// barriers that match Linux's virtio_mb/virtio_rmb/virtio_wmb, single-access
// loads and stores of the 16-bit ring indexes, and vring_need_event.
//
// The barriers are a few instructions of assembly on amd64 and arm64
// (sync/atomic has no stand-alone fences), and sequentially consistent
// atomics elsewhere.
package ring
