package fusewire

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

// Options configure a Device.
type Options struct {
	// RequestQueues is the number of request queues after the hiprio
	// queue 0 (default 1).
	RequestQueues int
	// AnnounceSubmounts offers FUSE_SUBMOUNTS in INIT, so that the guest
	// creates a submount wherever the filesystem sets FUSE_ATTR_SUBMOUNT.
	AnnounceSubmounts bool
	// Logger receives the device's logs (default: logrus' standard logger).
	Logger *logrus.Entry
	// Mount carries what the filesystem wants from INIT, with go-fuse's
	// meaning: MaxWrite (default 1 MiB here), MaxReadAhead, MaxBackground,
	// CongestionThreshold, EnableLocks, EnableSymlinkCaching, EnableAcl,
	// ExplicitDataCacheControl, SyncRead, DisableReadDirPlus,
	// DisableXAttrs, IgnoreSecurityLabels, RememberInodes,
	// ExtraCapabilities and DisabledCapabilities. The rest is ignored.
	Mount fuse.MountOptions
	// OnDestroy, if set, is called after the reply to DESTROY (the guest
	// unmounted) has been written. It runs on the worker that served the
	// request, before the chain goes back to the guest, so it must not wait
	// for the device to stop.
	OnDestroy func()
}

// Session is what INIT negotiated.
type Session struct {
	// Kernel is the INIT request as the guest sent it.
	Kernel fuse.InitIn
	// Reply is what the device answered.
	Reply fuse.InitOut
	// Flags are the negotiated capability bits (Reply's Flags and Flags2).
	Flags uint64
}

// Device serves FUSE requests arriving in virtqueue chains from a
// fuse.RawFileSystem. It satisfies vhostuser's device interface
// (NumQueues, Features, HandleChain) and is safe for concurrent use by
// any number of queue workers.
type Device struct {
	fs       fuse.RawFileSystem
	opts     Options
	log      *logrus.Entry
	maxWrite int

	session atomic.Pointer[Session]
	nextID  atomic.Uint64
	warnAt  atomic.Int64 // unix nanoseconds before which warnings are demoted

	requests sync.Pool // *request
	buffers  sync.Pool // *[]byte of pooledBufferMaxCap
}

// NewDevice returns a device serving fs.
func NewDevice(fs fuse.RawFileSystem, opts Options) *Device {
	if opts.RequestQueues <= 0 {
		opts.RequestQueues = 1
	}
	if opts.Logger == nil {
		opts.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	d := &Device{fs: fs, opts: opts, log: opts.Logger, maxWrite: opts.Mount.MaxWrite}
	if d.maxWrite <= 0 {
		d.maxWrite = 1 << 20
	}
	if d.maxWrite > maxTransfer {
		d.maxWrite = maxTransfer
	}
	d.requests.New = func() any { return new(request) }
	d.buffers.New = func() any {
		b := make([]byte, pooledBufferMaxCap)
		return &b
	}
	return d
}

// NumQueues is the number of virtqueues: hiprio queue 0 plus the request
// queues.
func (d *Device) NumQueues() int { return 1 + d.opts.RequestQueues }

// Features returns the device-specific virtio feature bits; virtio-fs
// has none.
func (d *Device) Features() uint64 { return 0 }

// Session returns what INIT negotiated, or nil before INIT and after
// DESTROY.
func (d *Device) Session() *Session { return d.session.Load() }

// HandleChain serves the FUSE request in c and returns the number of bytes
// written into c.Writable (0 when the request gets no reply or has to be
// dropped). Queue 0 is the hiprio queue.
func (d *Device) HandleChain(ctx context.Context, queue int, c *virtqueue.Chain) uint32 {
	r := d.requests.Get().(*request)
	r.reset(d, ctx, queue, c.Readable, c.Writable)
	n := r.serve()
	r.release()
	d.requests.Put(r)
	return uint32(n)
}

// getBuffer returns a scratch buffer of n bytes, pooled when small enough.
func (d *Device) getBuffer(n int) ([]byte, *[]byte) {
	if n > pooledBufferMaxCap {
		return make([]byte, n), nil
	}
	p := d.buffers.Get().(*[]byte)
	return (*p)[:n], p
}

// warnAllowed says whether a guest protocol violation may be logged as a
// warning: at most once a second, so that a hostile guest cannot flood the
// logs. Others go to debug.
func (d *Device) warnAllowed() bool {
	now := time.Now().UnixNano()
	at := d.warnAt.Load()
	return now >= at && d.warnAt.CompareAndSwap(at, now+int64(time.Second))
}
