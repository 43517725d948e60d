package metrics

import (
	"strconv"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"net/http"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
)

// CacheSource is where the blob cache and backend counters come from (a
// *storage.Pool).
type CacheSource interface {
	Metrics() storage.BlobcacheMetrics
	BackendMetrics() backend.BackendMetrics
}

const ns = "nydus_virtiofsd"

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(ns+"_"+name, help, labels, nil)
}

var (
	dRequests  = desc("fuse_requests_total", "FUSE requests served, by opcode.", "opcode")
	dErrors    = desc("fuse_errors_total", "FUSE requests answered with an error, by opcode and errno.", "opcode", "errno")
	dLatency   = desc("fuse_request_duration_seconds", "FUSE request service time, by opcode.", "opcode")
	dReadB     = desc("fuse_read_bytes_total", "Bytes returned by FUSE READ.")
	dWriteB    = desc("fuse_written_bytes_total", "Bytes written by FUSE WRITE.")
	dInflight  = desc("virtqueue_inflight_requests", "FUSE requests being served, by virtqueue.", "queue")
	dWait      = desc("virtqueue_wait_seconds_total", "Time chains waited in the virtqueue before a worker took them.", "queue")
	dWaitN     = desc("virtqueue_wait_count_total", "Chains whose queue wait was measured.", "queue")
	dSlow      = desc("fuse_slow_requests_total", "FUSE requests over the slow-request threshold.")
	dMounts    = desc("mounts", "Mounted filesystems.")
	dFop       = desc("fop_hits_total", "nydusd's fop counters, by mount and fop.", "mount", "fop")
	dFopErr    = desc("fop_errors_total", "nydusd's fop error counters, by mount and fop.", "mount", "fop")
	dDataRead  = desc("data_read_bytes_total", "Bytes read from the mount's files.", "mount")
	dOpens     = desc("opens_total", "Files opened on the mount.", "mount")
	dCacheHit  = desc("blobcache_hits_total", "Blob cache reads served from the cache, by kind (whole, partial).", "kind")
	dCacheReq  = desc("blobcache_reads_total", "Blob cache reads.")
	dCacheEnt  = desc("blobcache_entries", "Blobs in the cache.")
	dPrefB     = desc("blobcache_prefetch_bytes_total", "Bytes prefetched.")
	dPrefReq   = desc("blobcache_prefetch_requests_total", "Prefetch requests made to the backend.")
	dPrefReady = desc("blobcache_data_all_ready", "1 when every blob is fully in the cache.")
	dBeReads   = desc("backend_reads_total", "Backend reads.", "backend_type")
	dBeErrs    = desc("backend_read_errors_total", "Backend reads that failed.", "backend_type")
	dBeBytes   = desc("backend_read_bytes_total", "Bytes fetched from the backend.", "backend_type")
	dBeMs      = desc("backend_read_latency_seconds_total", "Cumulative backend read time.", "backend_type")
)

// Collector exports a daemon's counters to Prometheus at scrape time.
type Collector struct {
	d      *Daemon
	caches CacheSource
}

// NewCollector returns the collector of d; caches may be nil.
func NewCollector(d *Daemon, caches CacheSource) *Collector { return &Collector{d: d, caches: caches} }

// Describe sends nothing: the collector is unchecked (its series come and
// go with mounts and errnos).
func (c *Collector) Describe(chan<- *prometheus.Desc) {}

// Collect sends the current values.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	t := c.d.Transport
	var readB, writeB uint64
	for op := range maxOpcodes {
		var reqs, sum uint64
		var buckets [len(opLatencyBounds) + 1]uint64
		for qi := range t.queues {
			oc := &t.queues[qi].ops[op]
			reqs += oc.requests.Load()
			sum += oc.sumNanos.Load()
			for b := range buckets {
				buckets[b] += oc.buckets[b].Load()
			}
		}
		if reqs == 0 {
			continue
		}
		name := opLabel(uint32(op))
		ch <- prometheus.MustNewConstMetric(dRequests, prometheus.CounterValue, float64(reqs), name)
		cum := map[float64]uint64{}
		var acc, count uint64
		for b, bound := range opLatencyBounds {
			acc += buckets[b]
			cum[bound] = acc
		}
		count = acc + buckets[len(opLatencyBounds)]
		ch <- prometheus.MustNewConstHistogram(dLatency, count, float64(sum)/1e9, cum, name)
	}
	t.byErrno.Range(func(k, v any) bool {
		key := k.(errKey)
		ch <- prometheus.MustNewConstMetric(dErrors, prometheus.CounterValue, float64(v.(interface{ Load() uint64 }).Load()),
			opLabel(key.op), errnoLabel(key.errno))
		return true
	})
	for qi := range t.queues {
		q := &t.queues[qi]
		readB += q.bytesRead.Load()
		writeB += q.bytesWrite.Load()
		n := q.waitCount.Load()
		in := q.inflight.Load()
		if n == 0 && in == 0 && !queueSeen(q) {
			continue
		}
		l := strconv.Itoa(qi)
		ch <- prometheus.MustNewConstMetric(dInflight, prometheus.GaugeValue, float64(in), l)
		ch <- prometheus.MustNewConstMetric(dWait, prometheus.CounterValue, float64(q.waitNanos.Load())/1e9, l)
		ch <- prometheus.MustNewConstMetric(dWaitN, prometheus.CounterValue, float64(n), l)
	}
	ch <- prometheus.MustNewConstMetric(dReadB, prometheus.CounterValue, float64(readB))
	ch <- prometheus.MustNewConstMetric(dWriteB, prometheus.CounterValue, float64(writeB))
	ch <- prometheus.MustNewConstMetric(dSlow, prometheus.CounterValue, float64(t.slow.Load()))

	mounts := c.d.Mounts()
	ch <- prometheus.MustNewConstMetric(dMounts, prometheus.GaugeValue, float64(len(mounts)))
	for _, m := range mounts {
		g := m.Global()
		for f := range FopCount {
			ch <- prometheus.MustNewConstMetric(dFop, prometheus.CounterValue, float64(g.FopHits[f]), m.id, f.String())
			ch <- prometheus.MustNewConstMetric(dFopErr, prometheus.CounterValue, float64(g.FopErrors[f]), m.id, f.String())
		}
		ch <- prometheus.MustNewConstMetric(dDataRead, prometheus.CounterValue, float64(g.DataRead), m.id)
		ch <- prometheus.MustNewConstMetric(dOpens, prometheus.CounterValue, float64(g.NrOpens), m.id)
	}
	if c.caches == nil {
		return
	}
	bc := c.caches.Metrics()
	ch <- prometheus.MustNewConstMetric(dCacheHit, prometheus.CounterValue, float64(bc.WholeHits), "whole")
	ch <- prometheus.MustNewConstMetric(dCacheHit, prometheus.CounterValue, float64(bc.PartialHits), "partial")
	ch <- prometheus.MustNewConstMetric(dCacheReq, prometheus.CounterValue, float64(bc.Total))
	ch <- prometheus.MustNewConstMetric(dCacheEnt, prometheus.GaugeValue, float64(bc.EntriesCount))
	ch <- prometheus.MustNewConstMetric(dPrefB, prometheus.CounterValue, float64(bc.PrefetchDataAmount))
	ch <- prometheus.MustNewConstMetric(dPrefReq, prometheus.CounterValue, float64(bc.PrefetchRequestsCount))
	ready := 0.0
	if bc.DataAllReady {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(dPrefReady, prometheus.GaugeValue, ready)
	be := c.caches.BackendMetrics()
	typ := be.BackendType
	ch <- prometheus.MustNewConstMetric(dBeReads, prometheus.CounterValue, float64(be.ReadCount), typ)
	ch <- prometheus.MustNewConstMetric(dBeErrs, prometheus.CounterValue, float64(be.ReadErrors), typ)
	ch <- prometheus.MustNewConstMetric(dBeBytes, prometheus.CounterValue, float64(be.ReadAmountTotal), typ)
	ch <- prometheus.MustNewConstMetric(dBeMs, prometheus.CounterValue, float64(be.ReadCumulativeLatencyMillisTotal)/1e3, typ)
}

// queueSeen says whether a queue ever served a request.
func queueSeen(q *queueCounters) bool {
	for i := range q.ops {
		if q.ops[i].requests.Load() > 0 {
			return true
		}
	}
	return false
}

func opLabel(op uint32) string {
	if op == maxOpcodes-1 {
		return "OTHER"
	}
	return fusewire.OpName(op)
}

func errnoLabel(e int32) string {
	if n := errnoNames[syscall.Errno(e)]; n != "" {
		return n
	}
	return strconv.Itoa(int(e))
}

var errnoNames = map[syscall.Errno]string{
	syscall.EPERM: "EPERM", syscall.ENOENT: "ENOENT", syscall.EIO: "EIO", syscall.EBADF: "EBADF",
	syscall.EAGAIN: "EAGAIN", syscall.ENOMEM: "ENOMEM", syscall.EACCES: "EACCES", syscall.EEXIST: "EEXIST",
	syscall.ENOTDIR: "ENOTDIR", syscall.EISDIR: "EISDIR", syscall.EINVAL: "EINVAL", syscall.ENOSPC: "ENOSPC",
	syscall.EROFS: "EROFS", syscall.ERANGE: "ERANGE", syscall.ENOSYS: "ENOSYS", syscall.ENOTEMPTY: "ENOTEMPTY",
	syscall.ENODATA: "ENODATA", syscall.EINTR: "EINTR", syscall.ENAMETOOLONG: "ENAMETOOLONG",
	syscall.EOPNOTSUPP: "EOPNOTSUPP", syscall.ETIMEDOUT: "ETIMEDOUT", syscall.ENOTCONN: "ENOTCONN",
}

// Registry returns a Prometheus registry with the daemon's collector and
// the Go runtime and process collectors.
func Registry(d *Daemon, caches CacheSource) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(NewCollector(d, caches), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Handler serves GET /metrics in the Prometheus text format.
func Handler(r *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(r, promhttp.HandlerOpts{})
}
