package api

import (
	"fmt"
	"net/http"
	"path"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/metrics"
)

// metricsID is the key of a mount's counters: its cleaned mountpoint.
func metricsID(mountpoint string) string { return path.Clean(mountpoint) }

// countFS wraps a new mount's filesystem with its counters (when the
// server has Options.Metrics), applying the config's iostats_files,
// access_pattern and latest_read_files.
func (s *Server) countFS(mountpoint string, req MountRequest, fs fuse.RawFileSystem) fuse.RawFileSystem {
	d := s.opts.Metrics
	if d == nil {
		return fs
	}
	m := d.Mount(metricsID(mountpoint))
	set := d.Defaults()
	if req.Config != "" {
		if cfg, err := backend.ParseConfig([]byte(req.Config)); err == nil {
			set.FilesAccount = set.FilesAccount || cfg.Rafs.IOStatsFiles
			set.AccessPattern = set.AccessPattern || cfg.Rafs.AccessPattern
			set.LatestReadFiles = set.LatestReadFiles || cfg.Rafs.LatestReadFiles
		}
	}
	m.Apply(set)
	return metrics.Wrap(fs, m)
}

// forgetCounters drops an unmounted mount's counters.
func (s *Server) forgetCounters(mountpoint string) {
	if s.opts.Metrics != nil {
		s.opts.Metrics.Remove(metricsID(mountpoint))
	}
}

// fsMetrics answers GET /api/v1/metrics, /metrics/files, /metrics/pattern
// and /metrics/inflight from Options.Metrics. It returns false when it has
// nothing to say about the route.
func (s *Server) fsMetrics(w http.ResponseWriter, r *http.Request, id string, hasID bool) (bool, error) {
	d := s.opts.Metrics
	if d == nil {
		return false, nil
	}
	var m *metrics.Mount
	if hasID {
		var err error
		if m, err = d.Lookup(metricsID(id)); err != nil {
			return true, &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("no counter found for id %q", id)}
		}
	}
	switch r.URL.Path {
	case "/api/v1/metrics":
		if m != nil {
			s.reply(w, http.StatusOK, m.Global())
		} else {
			s.reply(w, http.StatusOK, d.Global())
		}
	case "/api/v1/metrics/files":
		latest, _, err := query(r, "latest")
		if err != nil {
			return true, err
		}
		out := []metrics.File{}
		for _, mm := range s.selectMounts(m) {
			out = append(out, mm.Files(latest == "true")...)
		}
		s.reply(w, http.StatusOK, out)
	case "/api/v1/metrics/pattern":
		out := []metrics.Access{}
		for _, mm := range s.selectMounts(m) {
			out = append(out, mm.Pattern()...)
		}
		s.reply(w, http.StatusOK, out)
	case "/api/v1/metrics/inflight":
		in := d.Inflight()
		if len(in) == 0 {
			return true, noContent(w)
		}
		s.reply(w, http.StatusOK, in)
	default:
		return false, nil
	}
	return true, nil
}

func (s *Server) selectMounts(m *metrics.Mount) []*metrics.Mount {
	if m != nil {
		return []*metrics.Mount{m}
	}
	return s.opts.Metrics.Mounts()
}

// events answers GET /api/v1/daemon/events: the recent errors.
func (s *Server) events(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return badMethod(r)
	}
	if s.opts.Metrics == nil {
		return &Error{Status: http.StatusNotFound, Message: "no route for GET /api/v1/daemon/events: the daemon keeps no events"}
	}
	s.reply(w, http.StatusOK, s.opts.Metrics.Events.Snapshot())
	return nil
}

// prometheus answers GET /metrics in the Prometheus text format.
func (s *Server) prometheus(w http.ResponseWriter, r *http.Request) error {
	if s.opts.Prometheus == nil {
		return &Error{Status: http.StatusNotFound, Message: "no route for /metrics: Prometheus metrics are off"}
	}
	if r.Method != http.MethodGet {
		return badMethod(r)
	}
	w.Header().Del("Content-Type")
	s.opts.Prometheus.ServeHTTP(w, r)
	return nil
}
