// Package testdriver is an in-process vhost-user frontend and virtio guest
// driver, for tests, benchmarks and fuzzing of the daemon end to end
// without a VMM.
//
// Connect creates guest RAM as memfds (one or several regions, back to back
// in guest-physical space so buffers can straddle regions), maps it as QEMU
// does (ring addresses are sent as this process's virtual addresses), lays
// out split rings, connects to the daemon's socket and negotiates in QEMU
// 7.2's order (ADD_MEM_REG when CONFIGURE_MEM_SLOTS is offered) or
// cloud-hypervisor's (SET_MEM_TABLE, NEED_REPLY on every message once
// REPLY_ACK is acked).
//
// Submit (or Start + Pending.Wait for many requests in flight) copies
// readable buffers into guest RAM, reserves writable ones, lays them out
// as descriptors (Layout: split into segments, or in an indirect table),
// publishes the head honouring the daemon's kick suppression, and waits
// for the used entry through the call eventfd (with Options.HaltPoll, a
// model of KVM's halt polling, the waiting goroutine first looks at the
// used ring itself for that long). StopQueue/StartQueue,
// Disconnect/Reconnect and memory hot-(un)plug drive the control plane;
// StartRaw, PublishHead and SendRaw let a test write hostile descriptors
// and messages.
//
// It is protocol-level only: FUSE helpers live with fusewire.
package testdriver
