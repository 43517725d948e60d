// Package fsapi holds what a filesystem's answer may carry beyond go-fuse's
// fuse.RawFileSystem, shared by the filesystems (passthrough, rafs, vfs)
// and the transport (fusewire) that turns answers into replies.
//
// Why a package of its own: a zero-copy read result ("these bytes are in
// this host file at this offset", Segment and SegmentedResult) describes a
// filesystem's answer, not the wire. Keeping it in the transport made every
// filesystem import the transport, and the storage layer under rafs could
// not name it without doing the same. fuse-backend-rs keeps its
// ZeroCopyWriter in its filesystem API and adapts it in its server; this
// package is that API for us, and fusewire adapts it (preadv into guest
// buffers).
//
// ContextReader lets a READ carry the request's context.Context (its
// cancellation now, request ids and traces later) from the transport down
// to the storage layer and backends: go-fuse's RawFileSystem.Read only
// passes a cancel channel. A filesystem or mount table implementing it is
// called with the request's context instead of Read.
//
// SyncFSer is the optional SYNCFS hook a filesystem may implement.
//
// Nothing here is hand-written for lack of a library: these are the few
// types the two sides must agree on.
package fsapi
