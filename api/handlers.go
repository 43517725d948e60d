package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vfs"
)

// maxBody bounds a request body (a RAFS config is at most 1 MiB).
const maxBody = 4 << 20

// decode reads a JSON body into v: 400 when it is not JSON of that shape.
func decode(r *http.Request, v any) error {
	b, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		return &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("read body: %v", err)}
	}
	if err := json.Unmarshal(b, v); err != nil {
		return &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("body is not valid JSON: %v", err)}
	}
	return nil
}

func badRequest(format string, args ...any) error {
	return &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...)}
}

// query returns a query parameter percent-decoded as a path: '+' stays
// '+' (the Go runtime does not escape the ids it puts there).
func query(r *http.Request, key string) (string, bool, error) {
	for _, kv := range strings.Split(r.URL.RawQuery, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if k != key {
			continue
		}
		s, err := url.PathUnescape(v)
		if err != nil {
			return "", true, badRequest("query parameter %s: %v", key, err)
		}
		return s, true, nil
	}
	return "", false, nil
}

func mountpoint(r *http.Request) (string, error) {
	p, ok, err := query(r, "mountpoint")
	if err != nil {
		return "", err
	}
	if !ok || p == "" {
		return "", badRequest("missing query parameter mountpoint")
	}
	return p, nil
}

type backendInfo struct {
	BackendType string `json:"backend_type"`
	Mountpoint  string `json:"mountpoint"`
	MountedTime string `json:"mounted_time"`
	Config      any    `json:"config"`
}

type daemonInfo struct {
	Version           Version                `json:"version"`
	ID                *string                `json:"id"`
	Supervisor        *string                `json:"supervisor"`
	State             string                 `json:"state"`
	BackendCollection map[string]backendInfo `json:"backend_collection"`
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// StateRunning is the only state the daemon reports: it serves the API
// once the vhost-user listener is up, as nydusd's virtiofs mode.
const StateRunning = "RUNNING"

// daemonInfoV2 is GET /api/v2/daemon's reply: v1's without the mounts.
type daemonInfoV2 struct {
	Version    Version `json:"version"`
	ID         *string `json:"id"`
	Supervisor *string `json:"supervisor"`
	State      string  `json:"state"`
}

func (s *Server) daemon(w http.ResponseWriter, r *http.Request) error {
	switch r.Method {
	case http.MethodGet:
		info := daemonInfo{Version: s.opts.Version, ID: optional(s.opts.ID), Supervisor: optional(s.opts.Supervisor),
			State: StateRunning, BackendCollection: map[string]backendInfo{}}
		for _, m := range s.opts.VFS.Mounts() {
			info.BackendCollection[m.Path] = backendInfo{BackendType: m.Type, Mountpoint: m.Path,
				MountedTime: m.MountedTime.UTC().Format(time.RFC3339Nano), Config: m.Config}
		}
		s.reply(w, http.StatusOK, info)
		return nil
	case http.MethodPut:
		var body struct {
			LogLevel *string `json:"log_level"`
		}
		if err := decode(r, &body); err != nil {
			return err
		}
		if body.LogLevel == nil {
			return badRequest("missing field `log_level`")
		}
		switch *body.LogLevel {
		case "trace", "debug", "info", "warn", "error":
		default:
			return badRequest("log_level %q: want trace, debug, info, warn or error", *body.LogLevel)
		}
		if err := s.opts.SetLogLevel(*body.LogLevel); err != nil {
			return fmt.Errorf("set log level: %w", err)
		}
		return noContent(w)
	}
	return badMethod(r)
}

// daemonV2 is /api/v2/daemon: GET is the daemon info without the mounts,
// PUT sets the log level as v1 does.
func (s *Server) daemonV2(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return s.daemon(w, r)
	}
	s.reply(w, http.StatusOK, daemonInfoV2{Version: s.opts.Version, ID: optional(s.opts.ID),
		Supervisor: optional(s.opts.Supervisor), State: StateRunning})
	return nil
}

// start is PUT /api/v1/daemon/start, which starts a daemon that waits
// (after an upgrade or failover). This daemon serves from the start, so
// the request has nothing to do.
func (s *Server) start(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPut {
		return badMethod(r)
	}
	s.log.Info("api: start requested; the daemon is already running")
	return noContent(w)
}

// superInfo is GET /api/v1/daemon/backend's reply for a RAFS mount.
type superInfo struct {
	Version        int      `json:"version"`
	Flags          uint64   `json:"flags"`
	ChunkSize      uint32   `json:"chunk_size"`
	Compressor     string   `json:"compressor"`
	Digester       string   `json:"digester"`
	ExplicitUIDGID bool     `json:"explicit_uid_gid"`
	Tarfs          bool     `json:"tarfs"`
	PlainEROFS     bool     `json:"plain_erofs"`
	BlobIDs        []string `json:"blob_ids"`
}

// fsGetter is implemented by a Table that hands out its filesystems
// (*vfs.VFS does).
type fsGetter interface {
	FS(path string) (fuse.RawFileSystem, error)
}

// daemonBackend is GET /api/v1/daemon/backend?mountpoint=: the superblock
// settings of the RAFS image mounted there.
func (s *Server) daemonBackend(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return badMethod(r)
	}
	p, err := mountpoint(r)
	if err != nil {
		return err
	}
	g, ok := s.opts.VFS.(fsGetter)
	if !ok {
		return fmt.Errorf("%s: %w: the mount table does not expose its filesystems", r.URL.Path, ErrUnsupported)
	}
	fs, err := g.FS(p)
	if err != nil {
		return err
	}
	rfs, ok := fs.(*rafs.FS)
	if !ok {
		return badRequest("%s is not a RAFS mount", p)
	}
	img := rfs.Image()
	sup := img.Super()
	s.reply(w, http.StatusOK, superInfo{Version: sup.Version, Flags: sup.Flags, ChunkSize: sup.ChunkSize,
		Compressor: sup.Compression.String(), Digester: sup.Digest.String(), ExplicitUIDGID: sup.ExplicitUIDGID,
		Tarfs: sup.Tarfs, PlainEROFS: sup.PlainEROFS, BlobIDs: img.BlobIDs()})
	return nil
}

// blobsV2 is /api/v2/blobs, nydusd's blob-cache entries for its fscache
// (singleton) mode, which a virtio-fs daemon does not have.
func (s *Server) blobsV2(w http.ResponseWriter, r *http.Request) error {
	switch r.Method {
	case http.MethodGet, http.MethodPut, http.MethodDelete:
		return fmt.Errorf("%s %s: %w: blob-cache entries belong to nydusd's fscache mode; this daemon serves virtio-fs",
			r.Method, r.URL.Path, ErrUnsupported)
	}
	return badMethod(r)
}

func (s *Server) exit(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPut {
		return badMethod(r)
	}
	if s.opts.Exit == nil {
		return fmt.Errorf("exit: %w: the daemon cannot be stopped through the API", ErrUnsupported)
	}
	noContent(w)
	http.NewResponseController(w).Flush()
	go s.opts.Exit()
	return nil
}

func (s *Server) mount(w http.ResponseWriter, r *http.Request) error {
	switch r.Method {
	case http.MethodPost, http.MethodPut:
	case http.MethodDelete:
		p, err := mountpoint(r)
		if err != nil {
			return err
		}
		if err := s.opts.VFS.Umount(p); err != nil {
			return err
		}
		s.log.WithField("mountpoint", p).Info("api: unmounted")
		return noContent(w)
	default:
		return badMethod(r)
	}
	p, err := mountpoint(r)
	if err != nil {
		return err
	}
	var body struct {
		FsType        string   `json:"fs_type"`
		Source        *string  `json:"source"`
		Config        *string  `json:"config"`
		PrefetchFiles []string `json:"prefetch_files"`
	}
	if err := decode(r, &body); err != nil {
		return err
	}
	switch {
	case body.Source == nil:
		return badRequest("missing field `source`")
	case body.Config == nil:
		return badRequest("missing field `config`")
	}
	typ, err := normalizeFsType(body.FsType)
	if err != nil {
		return err
	}
	for _, f := range body.PrefetchFiles {
		if !strings.HasPrefix(f, "/") {
			return fmt.Errorf("prefetch file %q is not an absolute path", f)
		}
	}
	req := MountRequest{FsType: typ, Source: *body.Source, Config: *body.Config, PrefetchFiles: body.PrefetchFiles}
	if r.Method == http.MethodPut {
		info, err := s.opts.VFS.Info(p)
		if err != nil {
			return err
		}
		if info.Type != BackendRafs || typ != FsRafs {
			return fmt.Errorf("remount %s: %w: only a RAFS image can be remounted", p, ErrUnsupported)
		}
	}
	m, err := s.opts.NewFS(req)
	if err != nil {
		return err
	}
	if r.Method == http.MethodPut {
		err = s.opts.VFS.Remount(p, m)
	} else {
		err = s.opts.VFS.Mount(p, m)
	}
	if err != nil {
		closeMount(m)
		return err
	}
	what := "api: mounted"
	if r.Method == http.MethodPut {
		what = "api: remounted"
	}
	s.log.WithField("mountpoint", p).WithField("fs_type", typ).WithField("source", req.Source).Info(what)
	return noContent(w)
}

// statusRecorder remembers the status a handler answered with, for the
// debug log of successful calls.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (Flush).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func closeMount(m vfs.Mount) {
	if m.Close != nil {
		m.Close()
	} else if c, ok := m.FS.(io.Closer); ok {
		c.Close()
	}
}

// metricsRoutes are nydusd's metrics endpoints.
var metricsRoutes = map[string]bool{
	"/api/v1/metrics": true, "/api/v1/metrics/files": true, "/api/v1/metrics/pattern": true,
	"/api/v1/metrics/backend": true, "/api/v1/metrics/blobcache": true, "/api/v1/metrics/inflight": true,
}

// metrics answers as nydusd for an id it does not know (404); the blob
// cache and backend counters come from Options.Caches (daemon-wide); the
// other endpoints answer 501 for now.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return badMethod(r)
	}
	id, ok, err := query(r, "id")
	if err != nil {
		return err
	}
	if ok {
		if _, err := s.opts.VFS.Info(id); err != nil {
			return &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("no counter found for id %q", id)}
		}
	}
	if c := s.opts.Caches; c != nil {
		switch r.URL.Path {
		case "/api/v1/metrics/blobcache":
			m := c.Metrics()
			m.ID = id
			s.reply(w, http.StatusOK, m)
			return nil
		case "/api/v1/metrics/backend":
			m := c.BackendMetrics()
			m.ID = id
			s.reply(w, http.StatusOK, m)
			return nil
		}
	}
	return fmt.Errorf("%s: %w: metrics are not collected yet", r.URL.Path, ErrUnsupported)
}
