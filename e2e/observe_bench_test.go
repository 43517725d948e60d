package e2e

import (
	"math"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/metrics"
)

// BenchmarkObserveOverhead measures the cost of the counters on the whole
// path (kick → chain → dispatch → reply → call): a GETATTR round trip and
// a 1 MiB READ of a page-cached file, against three daemons serving the
// same directory: counters off; on (the default: transport observer with
// latency histograms, nydusd's per-mount counters); on with a tracer
// configured that samples nothing. The three are driven in turn in one
// loop, so load on the machine hits them alike; it reports each median and
// the ratios to "off" (target ≤ 1.03).
func BenchmarkObserveOverhead(b *testing.B) {
	path := bigFile(b)
	type side struct {
		name string
		c    *fuseclient.Client
		node uint64
		fh   uint64
	}
	var sides []*side
	for _, mode := range []string{"off", "on", "traced"} {
		fs := shareFS(b, filepath.Dir(path))
		var obs *metrics.Transport
		if mode != "off" {
			to := metrics.TransportOptions{MeasureLatency: true, Logger: quietLogger(), SlowThreshold: time.Hour}
			if mode == "traced" {
				tp := sdktrace.NewTracerProvider()
				to.Tracer, to.SampleEvery = tp.Tracer("bench"), math.MaxUint64
			}
			d := metrics.NewDaemon(metrics.Options{Defaults: metrics.Settings{MeasureLatency: true}, Transport: to})
			fs = metrics.Wrap(fs, d.Mount("/"))
			obs = d.Transport
		}
		var dm *daemon
		if obs != nil {
			dm = startObserved(b, fs, 1, 0, nil, obs)
		} else {
			dm = startDaemon(b, fs, 1, 0)
		}
		g := connectGuest(b, dm, testdriver.QEMU, 1)
		c := g.client(1, testdriver.Layout{})
		g.init(c)
		e, err := c.Lookup(fuse.FUSE_ROOT_ID, "big")
		if err != nil {
			b.Fatal(err)
		}
		op, err := c.Open(e.NodeId, syscall.O_RDONLY)
		if err != nil {
			b.Fatal(err)
		}
		sides = append(sides, &side{name: mode, c: c, node: e.NodeId, fh: op.Fh})
	}
	for _, bc := range []struct {
		name string
		op   func(s *side, i int) error
	}{
		{"getattr", func(s *side, _ int) error { _, err := s.c.GetAttr(s.node); return err }},
		{"read1MiB", func(s *side, i int) error {
			_, err := s.c.Read(s.node, s.fh, uint64(i%64)*readSize, readSize)
			return err
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			times := make([][]time.Duration, len(sides))
			for i := 0; b.Loop(); i++ {
				for k, s := range sides {
					t0 := time.Now()
					if err := bc.op(s, i); err != nil {
						b.Fatal(err)
					}
					times[k] = append(times[k], time.Since(t0))
				}
			}
			off := median(times[0])
			for k, s := range sides {
				m := median(times[k])
				b.ReportMetric(float64(m.Nanoseconds()), s.name+"-p50-ns")
				if k > 0 && off > 0 {
					b.ReportMetric(float64(m)/float64(off), s.name+"/off")
				}
			}
		})
	}
}
