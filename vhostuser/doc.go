// Package vhostuser is the device side of the vhost-user protocol for
// virtio-fs (the specification's "back-end"; in this repository "backend"
// means a blob source, package backend): the unix socket, the message
// codec, the session state machine, and the per-queue kick loops and
// workers that hand descriptor chains to a Device.
//
// Socket: Listen creates the socket (stale socket removed, mode 0600) and
// ListenerFromFD adopts an inherited listening fd (virtiofsd --fd=N).
// Serve accepts one frontend at a time; after it disconnects Serve returns,
// as virtiofsd does, or with Options.KeepListening accepts the next one.
// Cancelling the context closes listener and session at once; requests
// still inside the device get a cancelled context and are not waited for
// (guest memory they hold stays mapped until they let go of it).
//
// Messages: a 12-byte little-endian header (request, flags, size) and a
// payload, with fds as SCM_RIGHTS (Conn). The session handles
// GET/SET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_OWNER, RESET_OWNER,
// SET_MEM_TABLE, GET_MAX_MEM_SLOTS, ADD/REM_MEM_REG, GET_QUEUE_NUM,
// SET_VRING_NUM/ADDR/BASE, GET_VRING_BASE (stops the ring, waits for its
// requests, replies the next available index), SET_VRING_KICK/CALL/ERR
// (with the no-fd flag), SET_VRING_ENABLE (at any time) and
// SET_BACKEND_REQ_FD. With REPLY_ACK negotiated every message carrying
// NEED_REPLY and no natural reply gets a u64 status. A request that parses
// but fails (an overlapping region, a bad ring address) is answered with a
// failure status and the session continues; without REPLY_ACK it ends the
// session, since the frontend could not learn of it. A malformed or unknown
// message is logged and ends the session: the frontend sees the socket
// close instead of waiting forever. Every received fd is closed unless
// kept.
//
// Offer: VERSION_1 | RING_INDIRECT_DESC | RING_EVENT_IDX |
// PROTOCOL_FEATURES plus Device.Features(); protocol MQ | REPLY_ACK |
// CONFIGURE_MEM_SLOTS. BACKEND_REQ is not offered (virtio-fs without DAX
// never writes to the frontend). Rings start disabled once protocol
// features are in play, until SET_VRING_ENABLE(1).
//
// Queues: queue 0 is hiprio and is served inline by one goroutine; queues
// 1..N carry requests, each served by Options.Workers goroutines taking
// turns as leader: the leader waits for kicks and pops a chain, then
// passes the lead to an idle goroutine and serves the chain itself, so the
// goroutine the kick woke serves the request with no hand-off in between.
// Requests of one queue complete out of order and a slow one holds up
// only its goroutine. Queues run independently; the hot path
// takes no lock shared between queues (the used ring has a per-queue
// mutex). Each descriptor head has a reusable slot, so serving a request
// allocates nothing in this package.
//
// Notifications (docs/notifications.md): only the leader reads the kick
// eventfd, and it re-arms kicks (avail_event or the NO_NOTIFY flag) and
// looks at the ring once more before every wait, so no kick is consumed
// by a goroutine that will not look. The wait is bounded by
// Options.IdleCheck: a leader that saw nothing for that long pops whatever
// came without a kick and signals the guest again if it may have missed a
// used-buffer signal, so a notification lost anywhere (VMM, guest, us)
// costs about a second, not a hung guest. The leader waits for a kick
// through the Go runtime's poller by default, or blocked in ppoll(2) on
// the kick eventfd with Options.KickWait "ppoll" or "inline-ppoll" (the
// daemon's default; measured in docs/benchmarks.md). The ppoll modes keep
// the kick and call eventfds out of the runtime poller (eventfd.go: it
// woke its thread at every kick and signal for nothing) with a small
// wrapper of our own, since os.File registers every non-blocking fd it
// wraps. Stopping a queue waits for requests in the device at most
// Options.StopTimeout, then abandons them and seals the ring, so
// GET_VRING_BASE is always answered. The connection
// keeps a small fd reserve released only around recvmsg, so a kick fd
// still arrives when the guest holds every other fd; fds lost anyway fail
// that message and stop that ring, never the daemon. Warnings a guest can
// trigger per chain are rate-limited (internal/ratelog).
//
// Written by hand: go-fuse's vhost-user code is internal and misses
// SET_MEM_TABLE and GET_VRING_BASE, which cloud-hypervisor and VM stop
// need; the rust-vmm crates are Rust.
package vhostuser
