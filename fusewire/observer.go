package fusewire

import (
	"context"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Observer is told about every FUSE request the device frames: Begin once
// its header is read (it may return a context carrying, say, a trace span,
// which the filesystem's ReadContext then gets), End once the reply is
// written (or the request dropped). Both run on the queue worker serving
// the request and must be quick; they must not keep info.
type Observer interface {
	Begin(ctx context.Context, info *RequestInfo) context.Context
	End(ctx context.Context, info *RequestInfo)
}

// RequestInfo describes one request to an Observer.
type RequestInfo struct {
	// Queue is the virtqueue (0: hiprio); ID the device's request id.
	Queue int
	ID    uint64
	// Unique, Opcode and NodeID come from the request header.
	Unique uint64
	Opcode uint32
	NodeID uint64
	// Stamp is the Observer's own: Begin may set it (say, to a clock
	// reading) for End to use. fusewire reads no clock itself.
	Stamp [2]int64
	// At End: the reply's errno (0: success), the bytes the reply carried
	// after its header (READ data, directory entries...), and for WRITE
	// the bytes written.
	Errno   int32
	Replied int
	Written int
}

// observation is a request's Observer bookkeeping.
type observation struct {
	info RequestInfo
}

// begin tells the observer a request has been framed.
func (r *request) begin(o Observer) {
	h := r.header()
	r.obs.info = RequestInfo{Queue: r.queue, ID: r.id, Unique: h.Unique, Opcode: h.Opcode, NodeID: h.NodeId}
	r.ctx = o.Begin(r.ctx, &r.obs.info)
}

// end tells the observer the request is done; n is the reply length.
func (r *request) end(o Observer, n *int) {
	in := &r.obs.info
	in.Errno = int32(r.status)
	if *n > outHeaderSize {
		in.Replied = *n - outHeaderSize
	}
	if in.Opcode == OpWrite && r.status.Ok() && *n >= outHeaderSize+sz[fuse.WriteOut]() {
		in.Written = int(outStruct[fuse.WriteOut](r).Size)
	}
	o.End(r.ctx, in)
}

// QueueWaiter is an Observer that also takes how long chains waited in
// their virtqueue (kick to pop).
type QueueWaiter interface {
	QueueWait(queue int, d time.Duration)
}

// QueueWait passes a chain's wait in its virtqueue on to the Observer, if
// it takes it (QueueWaiter). The vhost-user layer calls it, through an
// interface of its own, before HandleChain.
func (d *Device) QueueWait(queue int, wait time.Duration) {
	if qw, ok := d.opts.Observer.(QueueWaiter); ok {
		qw.QueueWait(queue, wait)
	}
}
