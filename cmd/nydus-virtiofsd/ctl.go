package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/metrics"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
)

const ctlLong = `Ask a running daemon (ours, or nydusd) through its HTTP API socket, as nydusctl
does, and print the answer as tables, or as the API's JSON with --raw:

  info      the daemon: version, id, state, mounts
  mounts    the mounted filesystems
  metrics   nydusd's filesystem counters (fops, bytes read, read sizes and latencies)
  backend   the backend reads the blob caches made
  cache     the blob cache counters and prefetch progress
  inflight  the FUSE requests being served
  events    recent errors

--id selects one mount (its mountpoint) for metrics, backend and cache.`

// ctlRoutes maps ctl's words to API routes.
var ctlRoutes = map[string]string{
	"info": "/api/v1/daemon", "mounts": "/api/v1/daemon", "metrics": "/api/v1/metrics",
	"backend": "/api/v1/metrics/backend", "cache": "/api/v1/metrics/blobcache",
	"inflight": "/api/v1/metrics/inflight", "events": "/api/v1/daemon/events",
}

// runCtl is `nydus-virtiofsd ctl --sock API_SOCKET WHAT`.
func runCtl(args []string) int {
	cmd := newCommand("ctl", "--sock API_SOCKET [--raw] [--id MOUNTPOINT] info|mounts|metrics|backend|cache|inflight|events", ctlLong)
	sock := cmd.Flags().StringP("sock", "S", "", "the daemon's API socket (--apisock) (required)")
	raw := cmd.Flags().Bool("raw", false, "print the API's JSON instead of tables")
	id := cmd.Flags().String("id", "", "the mount (mountpoint) to report on")
	logLevel := addLogLevel(cmd.Flags())
	cmd.Args = func(_ *cobra.Command, pos []string) error {
		if len(pos) != 1 {
			return usageErrorf("say what to show: one of info, mounts, metrics, backend, cache, inflight, events")
		}
		if _, ok := ctlRoutes[pos[0]]; !ok {
			return usageErrorf("unknown %q: want info, mounts, metrics, backend, cache, inflight or events", pos[0])
		}
		return nil
	}
	return execute(cmd, args, func(pos []string) error {
		if err := required(cmd.Flags(), "sock"); err != nil {
			return err
		}
		if _, err := toolLogger(*logLevel, ""); err != nil {
			return err
		}
		what := pos[0]
		route := ctlRoutes[what]
		if *id != "" && (what == "metrics" || what == "backend" || what == "cache") {
			route += "?id=" + url.PathEscape(*id)
		}
		status, body, err := apiGet(*sock, route)
		if err != nil {
			return err
		}
		if status >= 300 {
			var e struct{ Message string }
			if json.Unmarshal(body, &e) == nil && e.Message != "" {
				return fmt.Errorf("%s: %s (HTTP %d)", route, e.Message, status)
			}
			return fmt.Errorf("%s: HTTP %d", route, status)
		}
		if *raw {
			return printRaw(os.Stdout, body)
		}
		return printTable(os.Stdout, what, status, body)
	})
}

// apiGet sends GET route to the API on a unix socket.
func apiGet(sock, route string) (int, []byte, error) {
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	resp, err := c.Get("http://localhost" + route)
	if err != nil {
		return 0, nil, fmt.Errorf("--sock %s: %w", sock, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func printRaw(w io.Writer, body []byte) error {
	if len(body) == 0 {
		_, err := fmt.Fprintln(w, "null")
		return err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, body, "", "  "); err != nil {
		return fmt.Errorf("the daemon's answer is not JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// daemonReply is the part of GET /api/v1/daemon that ctl shows.
type daemonReply struct {
	Version    map[string]string `json:"version"`
	ID         *string           `json:"id"`
	Supervisor *string           `json:"supervisor"`
	State      string            `json:"state"`
	Backends   map[string]struct {
		BackendType string `json:"backend_type"`
		Mountpoint  string `json:"mountpoint"`
		MountedTime string `json:"mounted_time"`
	} `json:"backend_collection"`
}

func printTable(out io.Writer, what string, status int, body []byte) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer w.Flush()
	switch what {
	case "info", "mounts":
		var d daemonReply
		if err := json.Unmarshal(body, &d); err != nil {
			return fmt.Errorf("daemon info: %w", err)
		}
		if what == "info" {
			fmt.Fprintf(w, "Version:\t%s (%s)\n", d.Version["package_ver"], d.Version["git_commit"])
			fmt.Fprintf(w, "ID:\t%s\n", deref(d.ID))
			fmt.Fprintf(w, "Supervisor:\t%s\n", deref(d.Supervisor))
			fmt.Fprintf(w, "State:\t%s\n", d.State)
			fmt.Fprintf(w, "Mounts:\t%d\n", len(d.Backends))
			if len(d.Backends) > 0 {
				fmt.Fprintln(w)
			}
		}
		if len(d.Backends) > 0 {
			fmt.Fprintln(w, "MOUNTPOINT\tTYPE\tMOUNTED")
			for _, k := range sortedKeys(d.Backends) {
				b := d.Backends[k]
				fmt.Fprintf(w, "%s\t%s\t%s\n", k, b.BackendType, b.MountedTime)
			}
		}
	case "metrics":
		var g metrics.Global
		if err := json.Unmarshal(body, &g); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		printGlobal(w, &g)
	case "backend":
		var b backend.BackendMetrics
		if err := json.Unmarshal(body, &b); err != nil {
			return fmt.Errorf("backend metrics: %w", err)
		}
		fmt.Fprintf(w, "Backend type:\t%s\n", b.BackendType)
		fmt.Fprintf(w, "Reads:\t%d\n", b.ReadCount)
		fmt.Fprintf(w, "Read errors:\t%d\n", b.ReadErrors)
		fmt.Fprintf(w, "Bytes read:\t%s\n", humanBytes(uint64(b.ReadAmountTotal)))
		fmt.Fprintf(w, "Cumulative latency:\t%d ms\n", b.ReadCumulativeLatencyMillisTotal)
		if b.ReadCount > 0 {
			fmt.Fprintf(w, "Average latency:\t%.1f ms\n", float64(b.ReadCumulativeLatencyMillisTotal)/float64(b.ReadCount))
		}
		fmt.Fprintf(w, "Reads by size:\t%s\n", dist(sizeLabels, b.ReadCountBlockSizeDist[:]))
	case "cache":
		var c storage.BlobcacheMetrics
		if err := json.Unmarshal(body, &c); err != nil {
			return fmt.Errorf("blob cache metrics: %w", err)
		}
		fmt.Fprintf(w, "Store path:\t%s\n", c.StorePath)
		fmt.Fprintf(w, "Blobs:\t%d\n", c.EntriesCount)
		fmt.Fprintf(w, "Reads:\t%d\n", c.Total)
		fmt.Fprintf(w, "Whole hits:\t%d\n", c.WholeHits)
		fmt.Fprintf(w, "Partial hits:\t%d\n", c.PartialHits)
		if c.Total > 0 {
			fmt.Fprintf(w, "Hit rate:\t%.1f%%\n", 100*float64(c.WholeHits)/float64(c.Total))
		}
		fmt.Fprintf(w, "Prefetched:\t%s in %d requests, %d workers, %d ms\n", humanBytes(uint64(c.PrefetchDataAmount)),
			c.PrefetchRequestsCount, c.PrefetchWorkers, c.PrefetchCumulativeMs)
		fmt.Fprintf(w, "All data ready:\t%v\n", c.DataAllReady)
	case "inflight":
		if status == http.StatusNoContent {
			fmt.Fprintln(w, "no requests in flight")
			return nil
		}
		var in []metrics.Inflight
		if err := json.Unmarshal(body, &in); err != nil {
			return fmt.Errorf("inflight: %w", err)
		}
		fmt.Fprintln(w, "UNIQUE\tOPCODE\tINODE\tSINCE")
		for _, e := range in {
			fmt.Fprintf(w, "%d\t%d\t%d\t%s\n", e.Unique, e.Opcode, e.Inode, time.Unix(e.TimestampSecs, 0).UTC().Format(time.RFC3339))
		}
	case "events":
		var ev metrics.EventsReply
		if err := json.Unmarshal(body, &ev); err != nil {
			return fmt.Errorf("events: %w", err)
		}
		fmt.Fprintf(w, "Errors:\t%d (keeping the last %d, at most %d bytes)\n", ev.TotalErrors, ev.MaxErrors, ev.MaxSize)
		for _, e := range ev.Errors {
			fmt.Fprintln(w, strings.TrimSpace(e))
		}
	}
	return nil
}

var (
	sizeLabels    = []string{"<1K", "1K", "4K", "16K", "64K", "128K", "512K", "1M+"}
	latencyLabels = []string{"≤200us", "≤1ms", "≤20ms", "≤50ms", "≤500ms", "≤1s", "≤2s", ">2s"}
)

func printGlobal(w io.Writer, g *metrics.Global) {
	id := g.ID
	if id == "" {
		id = "(all mounts)"
	}
	fmt.Fprintf(w, "Mount:\t%s\n", id)
	fmt.Fprintf(w, "Files opened:\t%d\n", g.NrOpens)
	fmt.Fprintf(w, "Data read:\t%s\n", humanBytes(g.DataRead))
	fmt.Fprintf(w, "Reads by size:\t%s\n", dist(sizeLabels, g.BlockCountRead[:]))
	if g.MeasureLatency {
		fmt.Fprintf(w, "Read latency:\t%s\n", dist(latencyLabels, g.ReadLatencyDist[:]))
	}
	fmt.Fprintf(w, "Per-file stats:\t%v\tAccess pattern:\t%v\n", g.FilesAccountEnabled, g.AccessPatternEnabled)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "FOP\tHITS\tERRORS\tAVG LATENCY")
	for f := range metrics.FopCount {
		avg := "-"
		if g.MeasureLatency && g.FopHits[f] > 0 {
			avg = fmt.Sprintf("%d us", g.FopCumulativeLatencyTotal[f]/g.FopHits[f])
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\n", f, g.FopHits[f], g.FopErrors[f], avg)
	}
}

// dist prints a bucketed distribution as label:count pairs.
func dist[T int64 | uint64](labels []string, v []T) string {
	parts := make([]string, 0, len(v))
	for i, n := range v {
		if i < len(labels) {
			parts = append(parts, fmt.Sprintf("%s:%d", labels[i], n))
		}
	}
	return strings.Join(parts, " ")
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB (%d B)", float64(n)/float64(div), "KMGTPE"[exp], n)
}

func deref(s *string) string {
	if s == nil || *s == "" {
		return "-"
	}
	return *s
}
