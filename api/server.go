package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vfs"
)

// Version is nydusd's build information object; runtime-rs needs all five
// fields, as strings.
type Version struct {
	PackageVer string `json:"package_ver"`
	GitCommit  string `json:"git_commit"`
	BuildTime  string `json:"build_time"`
	Profile    string `json:"profile"`
	Rustc      string `json:"rustc"`
}

// Table is the mount table the API changes (a *vfs.VFS).
type Table interface {
	Mount(path string, m vfs.Mount) error
	Umount(path string) error
	Remount(path string, m vfs.Mount) error
	Info(path string) (vfs.MountInfo, error)
	Mounts() []vfs.MountInfo
}

// Options configure the API server.
type Options struct {
	// VFS receives the mounts. Required.
	VFS Table
	// NewFS builds the filesystem of a mount request. Nil: DefaultNewFS
	// with no default RAFS config.
	NewFS NewFS
	// ID and Supervisor are reported in the daemon info (null when empty).
	ID, Supervisor string
	// Version is reported in the daemon info.
	Version Version
	// SetLogLevel applies PUT /api/v1/daemon's log_level (trace, debug,
	// info, warn or error). Nil sets the level of Logger's logger.
	SetLogLevel func(level string) error
	// Exit is called after PUT /api/v1/daemon/exit has been answered. Nil:
	// the endpoint answers 501.
	Exit func()
	// Logger receives request errors; nil logs to logrus' standard logger.
	Logger *logrus.Entry
	// Caches, when set, answers /api/v1/metrics/blobcache and
	// /api/v1/metrics/backend (the blob caches' counters).
	Caches *storage.Pool
}

// Server serves the API.
type Server struct {
	opts Options
	log  *logrus.Entry
}

// New returns the API server.
func New(opts Options) (*Server, error) {
	if opts.VFS == nil {
		return nil, errors.New("api: no mount table")
	}
	if opts.Logger == nil {
		opts.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	if opts.NewFS == nil {
		opts.NewFS = DefaultNewFS(FSOptions{Logger: opts.Logger})
	}
	if opts.SetLogLevel == nil {
		l := opts.Logger.Logger
		opts.SetLogLevel = func(level string) error {
			lv, err := logrus.ParseLevel(level)
			if err != nil {
				return err
			}
			l.SetLevel(lv)
			return nil
		}
	}
	return &Server{opts: opts, log: opts.Logger}, nil
}

// ServeHTTP applies nydusd's response conventions around the routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Server", "Nydus API")
	var err error
	rec := &statusRecorder{ResponseWriter: w}
	w = rec
	switch p := r.URL.Path; {
	case p == "/api/v1/daemon":
		err = s.daemon(w, r)
	case p == "/api/v1/daemon/exit":
		err = s.exit(w, r)
	case p == "/api/v1/daemon/start":
		err = s.start(w, r)
	case p == "/api/v1/daemon/backend":
		err = s.daemonBackend(w, r)
	case p == "/api/v2/daemon":
		err = s.daemonV2(w, r)
	case p == "/api/v2/blobs":
		err = s.blobsV2(w, r)
	case p == "/api/v1/mount":
		err = s.mount(w, r)
	case metricsRoutes[p]:
		err = s.metrics(w, r)
	default:
		err = &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("no route for %s %s", r.Method, p)}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.WithField("method", r.Method).WithField("uri", r.URL.RequestURI()).WithField("status", rec.status).Debug("api: ok")
}

// noContent is the success reply without a body.
func noContent(w http.ResponseWriter) error {
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Listen opens the API socket at path, removing a stale socket file
// first. A socket some server still answers on is refused: taking it over
// would leave that daemon running and unreachable. The socket is made with
// mode 0600 whatever the umask (it mounts images and ends the daemon): the
// umask is tightened around bind and the mode set again afterwards, like
// the vhost-user socket's.
func Listen(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another daemon serves its API on this socket; stop it first (only a stale socket file is removed)", path)
		}
		os.Remove(path)
	}
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("api: chmod %s: %w", path, err)
	}
	return l, nil
}

// Serve answers requests on l until ctx is done; it closes l.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			srv.Shutdown(sctx)
		case <-done:
		}
	}()
	err := srv.Serve(l)
	close(done)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("api: %w", err)
}

// Error is an API error: an HTTP status and the message of the
// {"code":"UNDEFINED","message":...} body.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errors a NewFS may wrap to pick a status.
var (
	ErrUnsupported = errors.New("unsupported")
	ErrBadRequest  = errors.New("bad request")
	ErrNotReady    = errors.New("not ready")
)

func statusOf(err error) int {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Status
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnsupported):
		return http.StatusNotImplemented
	case errors.Is(err, ErrNotReady):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	st := statusOf(err)
	s.log.WithField("method", r.Method).WithField("uri", r.URL.RequestURI()).WithField("status", st).Warnf("api: %v", err)
	s.reply(w, st, errorBody{Code: "UNDEFINED", Message: err.Error()})
}

func (s *Server) reply(w http.ResponseWriter, status int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody{Code: "UNDEFINED", Message: fmt.Sprintf("encode reply: %v", err)})
	}
	w.WriteHeader(status)
	w.Write(b)
}

func badMethod(r *http.Request) error {
	return &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path)}
}
