package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/metrics"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/spans"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
)

// observeConfig is the observability part of the command line.
type observeConfig struct {
	MetricsAddr      string        // --metrics-addr HOST:PORT: Prometheus over TCP
	LogFormat        string        // --log-format text|json
	SlowRequest      time.Duration // --slow-request
	SlowSet          bool          // --slow-request was given
	NoMeasureLatency bool          // --no-measure-latency
	OTLPEndpoint     string        // --otlp-endpoint: trace export (else OTEL_EXPORTER_OTLP_ENDPOINT)
	TraceEvery       int           // --trace-sample-every: trace one request in N
}

// defaultSlowRequest is the slow-request threshold unless --slow-request.
const defaultSlowRequest = time.Second

func setLogFormat(c *daemonConfig, v string) error {
	switch v {
	case "text", "json":
		c.Observe.LogFormat = v
		return nil
	}
	return fmt.Errorf("--log-format: want text or json, got %q", v)
}

func setSlowRequest(c *daemonConfig, v string) error {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("--slow-request: want a duration such as 500ms or 0 (never), got %q", v)
	}
	c.Observe.SlowRequest, c.Observe.SlowSet = d, true
	return nil
}

// applyLogFormat sets the logger's line format.
func applyLogFormat(l *logrus.Logger, format string) {
	if format == "json" {
		l.SetFormatter(&logrus.JSONFormatter{})
	}
}

// observer is a daemon's counters and where they are served.
type observer struct {
	tp     *sdktrace.TracerProvider
	d      *metrics.Daemon
	prom   http.Handler
	log    *logrus.Entry
	addr   string
	caches metrics.CacheSource
}

// newObserver makes the daemon's counters. Error log lines are kept for
// /api/v1/daemon/events.
func newObserver(o observeConfig, log *logrus.Entry) *observer {
	slow := defaultSlowRequest
	if o.SlowSet {
		slow = o.SlowRequest
	}
	every := o.TraceEvery
	if every <= 0 {
		every = 100
	}
	to := metrics.TransportOptions{Logger: log.WithField("layer", "fuse"), SlowThreshold: slow,
		MeasureLatency: !o.NoMeasureLatency, SampleEvery: uint64(every)}
	tp, err := spans.Setup(context.Background(), spans.Options{Endpoint: o.OTLPEndpoint})
	switch {
	case err == nil:
		to.Tracer = tp.Tracer(spans.Instrumentation)
		log.Infof("tracing: one FUSE request in %d is exported over OTLP/HTTP", every)
	case !errors.Is(err, spans.ErrOff):
		log.WithError(err).Warn("tracing is off")
	}
	d := metrics.NewDaemon(metrics.Options{Defaults: metrics.Settings{MeasureLatency: !o.NoMeasureLatency}, Transport: to})
	log.Logger.AddHook(d.Events)
	return &observer{d: d, log: log, addr: o.MetricsAddr, tp: tp}
}

// close flushes the traces.
func (o *observer) close() {
	if o.tp != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := o.tp.Shutdown(ctx); err != nil {
			o.log.WithError(err).Warn("tracing: flushing the last spans")
		}
	}
}

// setCaches makes the blob caches' counters part of the Prometheus
// series; call it before serve and before the API starts.
func (o *observer) setCaches(c *storage.Pool) {
	if c != nil {
		o.caches = c
	}
	o.prom = metrics.Handler(metrics.Registry(o.d, o.caches))
}

// wrap counts fs as mount id, with the per-file and access-pattern
// switches of the nydusd config rc (nil: the defaults).
func (o *observer) wrap(id string, fs fuse.RawFileSystem, rc *backend.Config) fuse.RawFileSystem {
	m := o.d.Mount(path.Clean(id))
	if rc != nil {
		set := m.Settings()
		set.FilesAccount = set.FilesAccount || rc.Rafs.IOStatsFiles
		set.AccessPattern = set.AccessPattern || rc.Rafs.AccessPattern
		set.LatestReadFiles = set.LatestReadFiles || rc.Rafs.LatestReadFiles
		m.Apply(set)
	}
	return metrics.Wrap(fs, m)
}

// serve serves GET /metrics on --metrics-addr until ctx ends; it returns
// once the listener is open (or failed).
func (o *observer) serve(ctx context.Context) error {
	if o.addr == "" {
		return nil
	}
	if o.prom == nil {
		o.setCaches(nil)
	}
	l, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", o.prom)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.log.WithError(err).Error("metrics server stopped")
		}
	}()
	o.log.Infof("serving Prometheus metrics on http://%s/metrics", l.Addr())
	return nil
}

// QueueWait passes the vhost-user layer's per-chain queue wait on to the
// device (and so to the counters); sessionCounter would hide it.
func (s *sessionCounter) QueueWait(queue int, wait time.Duration) {
	if w, ok := s.Device.(fusewire.QueueWaiter); ok {
		w.QueueWait(queue, wait)
	}
}
