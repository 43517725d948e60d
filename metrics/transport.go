package metrics

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/ratelog"
)

// Transport bounds: opcodes at or above maxOpcodes are counted as one
// "other" opcode; queues at or above maxQueues share the last slot.
const (
	maxOpcodes = 64
	maxQueues  = 64
)

// opLatencyBounds are the upper bounds (seconds) of the per-opcode latency
// histograms exported to Prometheus.
var opLatencyBounds = [...]float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
	100e-3, 250e-3, 500e-3, 1, 2.5, 5}

// TransportOptions configure the per-request observer.
type TransportOptions struct {
	// Logger gets the request logs: each request at debug level, slow ones
	// at warn. Nil: no request logs.
	Logger logrus.FieldLogger
	// SlowThreshold is the duration from which a request is logged as
	// slow (0: never).
	SlowThreshold time.Duration
	// SlowLogInterval is the least time between two slow-request warnings
	// (default 1 s); the ones in between go to debug and are counted.
	SlowLogInterval time.Duration
	// MeasureLatency keeps the per-opcode latency histograms (the
	// requests are counted either way).
	MeasureLatency bool
	// Tracer, if set, starts a span for every SampleEvery-th request
	// (default 100); the span rides on the request's context to the
	// filesystem, the storage layer and the backend (package spans).
	Tracer      trace.Tracer
	SampleEvery uint64
}

// opCounters are one queue's counters for one opcode.
type opCounters struct {
	requests atomic.Uint64
	errors   atomic.Uint64
	sumNanos atomic.Uint64
	buckets  [len(opLatencyBounds) + 1]atomic.Uint64
}

// queueCounters are one queue's counters, on their own cache lines.
type queueCounters struct {
	inflight   atomic.Int64
	waitNanos  atomic.Uint64
	waitCount  atomic.Uint64
	bytesRead  atomic.Uint64
	bytesWrite atomic.Uint64
	ops        [maxOpcodes]opCounters
	_          [64]byte
}

// errKey is an (opcode, errno) pair of the error counters.
type errKey struct {
	op    uint32
	errno int32
}

// Transport counts every FUSE request by queue and opcode; it is the
// fusewire.Observer of a device. Counters are per queue: a queue is served
// by one worker at a time, so its counters stay on that worker's CPU.
type Transport struct {
	d       *Daemon
	opts    TransportOptions
	queues  [maxQueues]queueCounters
	byErrno sync.Map      // errKey -> *atomic.Uint64
	logger  *logrus.Entry // Logger as an Entry, for its level check; nil: no request logs
	slowLog ratelog.Limiter
	slow    atomic.Uint64
	measure atomic.Bool
	sampled atomic.Uint64
}

func newTransport(d *Daemon, o TransportOptions) *Transport {
	if o.SlowLogInterval <= 0 {
		o.SlowLogInterval = time.Second
	}
	if o.SampleEvery == 0 {
		o.SampleEvery = 100
	}
	t := &Transport{d: d, opts: o, slowLog: ratelog.Limiter{Interval: o.SlowLogInterval}}
	if o.Logger != nil {
		t.logger = o.Logger.WithFields(nil)
	}
	t.measure.Store(o.MeasureLatency)
	return t
}

// SetMeasureLatency switches the latency histograms on or off.
func (t *Transport) SetMeasureLatency(on bool) { t.measure.Store(on) }

func (t *Transport) queue(q int) *queueCounters {
	if q < 0 || q >= maxQueues {
		q = maxQueues - 1
	}
	return &t.queues[q]
}

func opIndex(op uint32) int {
	if op >= maxOpcodes {
		return maxOpcodes - 1
	}
	return int(op)
}

// QueueWait records how long a chain waited in queue q between the
// guest's kick and a worker picking it up (the vhost-user layer calls it).
func (t *Transport) QueueWait(q int, d time.Duration) {
	c := t.queue(q)
	c.waitNanos.Add(uint64(d))
	c.waitCount.Add(1)
}

// Begin counts the request in flight and, for a sampled request, starts
// its span.
func (t *Transport) Begin(ctx context.Context, info *fusewire.RequestInfo) context.Context {
	t.queue(info.Queue).inflight.Add(1)
	if !t.d.transported.Load() {
		t.d.transported.Store(true)
	}
	start := time.Since(t.d.epoch) // one monotonic clock read
	info.Stamp[0] = int64(start)
	info.Stamp[1] = int64(t.d.inflight.enter(info.NodeID, info.Opcode, info.Unique, start))
	if t.opts.Tracer != nil && t.sampled.Add(1)%t.opts.SampleEvery == 0 {
		ctx, _ = t.opts.Tracer.Start(ctx, "FUSE "+fusewire.OpName(info.Opcode), trace.WithSpanKind(trace.SpanKindServer),
			trace.WithTimestamp(t.d.epoch.Add(start)), trace.WithAttributes(
				attribute.Int("fuse.queue", info.Queue),
				attribute.Int64("fuse.unique", int64(info.Unique)),
				attribute.Int64("fuse.nodeid", int64(info.NodeID)),
				attribute.Int("fuse.opcode", int(info.Opcode))))
	}
	return ctx
}

// endSpan ends a sampled request's span with its result.
func endSpan(ctx context.Context, info *fusewire.RequestInfo) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attribute.Int("fuse.errno", int(info.Errno)), attribute.Int("fuse.reply_bytes", info.Replied))
	if info.Errno != 0 {
		span.SetStatus(codes.Error, errnoName(info.Errno))
	}
	span.End()
}

// End counts the finished request and logs it.
func (t *Transport) End(ctx context.Context, info *fusewire.RequestInfo) {
	q := t.queue(info.Queue)
	q.inflight.Add(-1)
	c := &q.ops[opIndex(info.Opcode)]
	c.requests.Add(1)
	measure := t.measure.Load()
	var d time.Duration
	if measure || t.opts.SlowThreshold > 0 || t.logger != nil {
		d = time.Since(t.d.epoch) - time.Duration(info.Stamp[0])
	}
	if slot := int(info.Stamp[1]); slot > 0 {
		// A counted filesystem handed its fop's timing over (Mount.begin).
		sl := &t.d.inflight.slots[slot-1]
		if m := sl.mount.Swap(nil); m != nil {
			f, ok := Fop(sl.fop.Load()), sl.result.Load() >= 0
			n := int(sl.result.Load())
			if f == FopRead && ok && info.Errno == 0 {
				n = info.Replied // what reached the guest
			}
			measured := m.measure.Load()
			if measured && !measure {
				d = time.Since(t.d.epoch) - time.Duration(info.Stamp[0])
			}
			m.record(f, sl.mino.Load(), info.Unique, ok, n, d, measured)
		}
		t.d.inflight.leave(slot)
	}
	if measure {
		c.sumNanos.Add(uint64(d))
		c.buckets[bucketOf(d)].Add(1)
	}
	if info.Errno != 0 {
		c.errors.Add(1)
		t.errno(info.Opcode, info.Errno).Add(1)
	}
	switch info.Opcode {
	case fusewire.OpRead:
		if info.Errno == 0 {
			q.bytesRead.Add(uint64(info.Replied))
		}
	case fusewire.OpWrite:
		q.bytesWrite.Add(uint64(info.Written))
	}
	if l := t.logger; l != nil {
		t.log(l, info, d)
	}
	if t.opts.Tracer != nil {
		endSpan(ctx, info)
	}
}

func bucketOf(d time.Duration) int {
	for i, b := range opLatencyNanos {
		if d <= b {
			return i
		}
	}
	return len(opLatencyNanos)
}

// opLatencyNanos are opLatencyBounds as durations.
var opLatencyNanos = func() (out [len(opLatencyBounds)]time.Duration) {
	for i, b := range opLatencyBounds {
		out[i] = time.Duration(b * 1e9)
	}
	return out
}()

func (t *Transport) errno(op uint32, errno int32) *atomic.Uint64 {
	k := errKey{op: uint32(opIndex(op)), errno: errno}
	if v, ok := t.byErrno.Load(k); ok {
		return v.(*atomic.Uint64)
	}
	v, _ := t.byErrno.LoadOrStore(k, new(atomic.Uint64))
	return v.(*atomic.Uint64)
}

// log writes the request's debug line, and a warning when it was slow
// (at most one per SlowLogInterval).
func (t *Transport) log(l *logrus.Entry, info *fusewire.RequestInfo, d time.Duration) {
	slow := t.opts.SlowThreshold > 0 && d >= t.opts.SlowThreshold
	if !slow && !l.Logger.IsLevelEnabled(logrus.DebugLevel) {
		return
	}
	f := logrus.Fields{
		"req":         requestID(info),
		"op":          fusewire.OpName(info.Opcode),
		"nodeid":      info.NodeID,
		"result":      errnoName(info.Errno),
		"duration_us": d.Microseconds(),
	}
	if slow {
		t.slow.Add(1)
		if ok, suppressed := t.slowLog.Allow(); ok {
			if suppressed > 0 {
				f["slow_suppressed"] = suppressed
			}
			q := t.queue(info.Queue)
			if n := q.waitCount.Load(); n > 0 {
				f["queue_wait_avg_us"] = time.Duration(q.waitNanos.Load() / n).Microseconds()
			}
			f["filesystem_us"] = d.Microseconds()
			l.WithFields(f).Warnf("slow FUSE request: %v (threshold %v)", d.Round(time.Microsecond), t.opts.SlowThreshold)
			return
		}
	}
	l.WithFields(f).Debug("fuse request")
}

// requestID names a request in logs: queue and FUSE unique.
func requestID(info *fusewire.RequestInfo) string {
	return "q" + strconv.Itoa(info.Queue) + "-" + strconv.FormatUint(info.Unique, 10)
}

func errnoName(e int32) string {
	if e == 0 {
		return "OK"
	}
	return syscall.Errno(e).Error()
}
