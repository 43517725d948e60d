package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/attribute"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/spans"
)

// Wrapper is a decorator that can hand out what it wraps (so that, for
// instance, SetAuth reaches a registry under its retry and metrics
// layers).
type Wrapper interface {
	Unwrap() Backend
}

// AuthSetter is a backend whose credentials can be replaced at runtime.
type AuthSetter interface {
	SetAuth(auth string) error
}

// SetAuth replaces the credentials of b or of the backend it decorates.
func SetAuth(b Backend, auth string) error {
	for b != nil {
		if s, ok := b.(AuthSetter); ok {
			return s.SetAuth(auth)
		}
		w, ok := b.(Wrapper)
		if !ok {
			break
		}
		b = w.Unwrap()
	}
	return errors.New("backend has no credentials to replace")
}

// RetryPolicy says how often and how long a failed request is retried.
type RetryPolicy struct {
	// Retries after the first attempt.
	Retries int
	// Backoff before retry n (0-based) is Backoff << n.
	Backoff time.Duration
	// Timeout bounds each attempt (0: none).
	Timeout time.Duration
	// Log gets retried and slow reads at warn level (nil: none).
	Log logrus.FieldLogger
}

// WithRetry makes b retry Open and ReadAt on retryable errors (transport
// errors, 5xx, short or over-long bodies, an attempt's timeout) and bound
// each attempt by p.Timeout. The caller's context ends all of it.
func WithRetry(b Backend, p RetryPolicy) Backend { return &retrying{inner: b, p: p} }

type retrying struct {
	inner Backend
	p     RetryPolicy
}

func (r *retrying) Unwrap() Backend { return r.inner }

// do runs f with the policy's attempts. f gets a per-attempt context.
func (p RetryPolicy) do(ctx context.Context, f func(ctx context.Context) error) error {
	var err error
	for n := 0; ; n++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if n == p.Retries && n > 0 {
			actx = withLastAttempt(actx)
		}
		if p.Timeout > 0 {
			actx, cancel = context.WithTimeout(actx, p.Timeout)
		}
		err = f(actx)
		timedOut := actx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		if timedOut {
			err = fmt.Errorf("attempt timed out after %v: %w", p.Timeout, err)
		} else if !retryable(err) {
			return err
		}
		if n >= p.Retries {
			if n > 0 {
				return fmt.Errorf("%d attempts: %w", n+1, err)
			}
			return err
		}
		// trace: a retry is an event of the backend request's span.
		if spans.Recording(ctx) {
			spans.Event(ctx, "retry", attribute.Int("attempt", n+1), attribute.String("error", err.Error()))
		}
		if p.Log != nil {
			p.Log.WithField("attempt", n+1).Warnf("backend: %v; retrying", err)
		}
		t := time.NewTimer(p.Backoff << n)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (%w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (r *retrying) Open(ctx context.Context, id string) (Blob, error) {
	var b Blob
	err := r.p.do(ctx, func(ctx context.Context) error {
		var err error
		b, err = r.inner.Open(ctx, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &retryBlob{Blob: b, p: r.p}, nil
}

type retryBlob struct {
	Blob
	p RetryPolicy
}

// ReadAt retries a failed read, except one whose caller follows its
// progress (WithProgress) and was told that all of p had arrived: the
// caller has those bytes already (the blob cache stores and serves each
// chunk as it lands, and checks its digest), so the failure came after
// the range asked for (an answer longer than it declared, a connection
// reset after the last byte) and asking again would fetch the same bytes
// for nothing. That read succeeds, and the failure is logged.
func (b *retryBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	var n int
	var eof error
	arrived := 0 // of the current attempt, as reported through progress
	if fn := progressOf(ctx); fn != nil {
		ctx = WithProgress(ctx, func(k int) {
			arrived = max(arrived, k)
			fn(k)
		})
	}
	err := b.p.do(ctx, func(ctx context.Context) error {
		var err error
		start := time.Now()
		arrived = 0
		n, err = b.Blob.ReadAt(ctx, p, off)
		if err != nil && len(p) > 0 && arrived >= len(p) && !errors.Is(err, io.EOF) {
			if b.p.Log != nil {
				b.p.Log.WithField("offset", off).WithField("size", len(p)).Warnf("backend: %v after the whole range arrived; not asking again", err)
			}
			n, err = len(p), nil
		}
		if d := time.Since(start); b.p.Log != nil && err == nil && slow(len(p), d) {
			b.p.Log.WithField("offset", off).WithField("size", len(p)).WithField("ms", d.Milliseconds()).Warn("backend: slow read")
		}
		if errors.Is(err, io.EOF) {
			eof, err = err, nil // a read past the end: n bytes and io.EOF
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, eof
}

// slow reports whether a read of n bytes that took d is worth a warning,
// as nydusd judges it: 250 ms, or 1 s above 4 MiB.
func slow(n int, d time.Duration) bool {
	if n > 4<<20 {
		return d >= time.Second
	}
	return d >= 250*time.Millisecond
}

// Latency buckets (upper bounds) of the backend metrics, in ms; the last
// bucket is everything above 2 s.
var latencyBounds = [7]int64{1, 20, 50, 100, 500, 1000, 2000}

// Size buckets (lower bounds): <1K, 1K, 4K, 16K, 64K, 128K, 512K, 1M+.
var sizeBounds = [7]int64{1 << 10, 4 << 10, 16 << 10, 64 << 10, 128 << 10, 512 << 10, 1 << 20}

// Metrics are nydusd's backend counters (GET /api/v1/metrics/backend),
// updated without locks.
type Metrics struct {
	typ            string
	readCount      atomic.Uint64
	readErrors     atomic.Uint64
	readAmount     atomic.Uint64
	latencyTotalMS atomic.Uint64
	latencyDist    [8]atomic.Uint64 // cumulative ms per block-size bucket
	sizeDist       [8]atomic.Uint64
	latencySizes   [8][8]atomic.Uint64
}

// NewMetrics returns zeroed counters for a backend of type typ.
func NewMetrics(typ string) *Metrics { return &Metrics{typ: typ} }

// BackendMetrics is the JSON nydusd answers at /api/v1/metrics/backend.
type BackendMetrics struct {
	ID                               string       `json:"id"` // the mount asked about, set by the API
	BackendType                      string       `json:"backend_type"`
	ReadCount                        uint64       `json:"read_count"`
	ReadErrors                       uint64       `json:"read_errors"`
	ReadAmountTotal                  uint64       `json:"read_amount_total"`
	ReadCumulativeLatencyMillisTotal uint64       `json:"read_cumulative_latency_millis_total"`
	ReadCumulativeLatencyMillisDist  [8]uint64    `json:"read_cumulative_latency_millis_dist"`
	ReadCountBlockSizeDist           [8]uint64    `json:"read_count_block_size_dist"`
	ReadLatencySizesDist             [8][8]uint64 `json:"read_latency_sizes_dist"`
}

// Snapshot reads the counters.
func (m *Metrics) Snapshot() BackendMetrics {
	s := BackendMetrics{BackendType: m.typ, ReadCount: m.readCount.Load(), ReadErrors: m.readErrors.Load(),
		ReadAmountTotal: m.readAmount.Load(), ReadCumulativeLatencyMillisTotal: m.latencyTotalMS.Load()}
	for i := range 8 {
		s.ReadCumulativeLatencyMillisDist[i] = m.latencyDist[i].Load()
		s.ReadCountBlockSizeDist[i] = m.sizeDist[i].Load()
		for j := range 8 {
			s.ReadLatencySizesDist[i][j] = m.latencySizes[i][j].Load()
		}
	}
	return s
}

// Add adds o's counters to s (summing several caches' backends).
func (s *BackendMetrics) Add(o BackendMetrics) {
	if s.BackendType == "" {
		s.BackendType = o.BackendType
	}
	s.ReadCount += o.ReadCount
	s.ReadErrors += o.ReadErrors
	s.ReadAmountTotal += o.ReadAmountTotal
	s.ReadCumulativeLatencyMillisTotal += o.ReadCumulativeLatencyMillisTotal
	for i := range 8 {
		s.ReadCumulativeLatencyMillisDist[i] += o.ReadCumulativeLatencyMillisDist[i]
		s.ReadCountBlockSizeDist[i] += o.ReadCountBlockSizeDist[i]
		for j := range 8 {
			s.ReadLatencySizesDist[i][j] += o.ReadLatencySizesDist[i][j]
		}
	}
}

func bucket(bounds *[7]int64, v int64, upper bool) int {
	for i, b := range bounds {
		if (upper && v <= b) || (!upper && v < b) {
			return i
		}
	}
	return 7
}

// Record counts one backend read of n bytes that took d and failed with
// err (nil: it succeeded). The storage layer, which reads backends
// directly to keep their local fds for zero copy, counts through it too.
func (m *Metrics) Record(n int, d time.Duration, err error) {
	m.readCount.Add(1)
	if err != nil {
		m.readErrors.Add(1)
		return
	}
	ms := d.Milliseconds()
	m.readAmount.Add(uint64(n))
	m.latencyTotalMS.Add(uint64(ms))
	lb, sb := bucket(&latencyBounds, ms, true), bucket(&sizeBounds, int64(n), false)
	m.latencyDist[sb].Add(uint64(ms)) // nydusd sums latency per block size
	m.sizeDist[sb].Add(1)
	m.latencySizes[sb][lb].Add(1)
}

// MetricsSource is a backend that keeps metrics.
type MetricsSource interface {
	Metrics() BackendMetrics
}

// WithMetrics counts every ReadAt of b's blobs in m.
func WithMetrics(b Backend, m *Metrics) Backend { return &metered{inner: b, m: m} }

type metered struct {
	inner Backend
	m     *Metrics
}

func (w *metered) Unwrap() Backend         { return w.inner }
func (w *metered) Metrics() BackendMetrics { return w.m.Snapshot() }

func (w *metered) Open(ctx context.Context, id string) (Blob, error) {
	b, err := w.inner.Open(ctx, id)
	if err != nil {
		return nil, err
	}
	return &meteredBlob{Blob: b, m: w.m}, nil
}

type meteredBlob struct {
	Blob
	m *Metrics
}

func (b *meteredBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	start := time.Now()
	n, err := b.Blob.ReadAt(ctx, p, off)
	if errors.Is(err, io.EOF) {
		b.m.Record(n, time.Since(start), nil)
	} else {
		b.m.Record(n, time.Since(start), err)
	}
	return n, err
}
