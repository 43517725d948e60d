package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/api"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/passthrough"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/sandbox"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vhostuser"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// waitingLine is what Kata's runtime-rs waits for on stderr before it starts
// the VMM.
const waitingLine = vhostuser.WaitingLine

// runDaemon runs the virtio-fs daemon that c describes until the frontend
// disconnects (or, with KeepListening, until SIGTERM/SIGINT) and returns the
// exit code.
func runDaemon(c daemonConfig) int {
	log, logWarnings, err := newLogger(&c)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		return exitFailure
	}
	switch {
	case c.RlimitNofile > 0:
		if err := passthrough.SetNofileLimit(uint64(c.RlimitNofile)); err != nil {
			log.Errorf("--rlimit-nofile=%d: %v", c.RlimitNofile, err)
			return exitFailure
		}
	case c.RlimitNofile < 0:
		if n, err := passthrough.RaiseNofileLimit(); err != nil {
			log.WithError(err).Warn("cannot raise RLIMIT_NOFILE")
		} else {
			log.Debugf("RLIMIT_NOFILE %d", n)
		}
	}

	// The reason the daemon stops is the context's cause: a signal, the
	// API's exit request, or (when the context is still live) the frontend
	// going away.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	go func() {
		select {
		case s := <-sigs:
			cancel(fmt.Errorf("%s received", unix.SignalName(s.(syscall.Signal))))
		case <-ctx.Done():
		}
	}()
	exit := func() {
		log.Info("exit requested through the API (PUT /api/v1/daemon/exit)")
		cancel(errors.New("exit requested through the API"))
	}

	if c.SharedDir != "" {
		if err := checkDir("--shared-dir", c.SharedDir); err != nil {
			log.Error(err)
			return exitFailure
		}
	}
	mode := sandbox.Mode(c.Sandbox)
	if c.Bootstrap != "" {
		mode = sandbox.None // an image needs its bootstrap and blobs: only --shared-dir is sandboxed
	}
	sb, err := sandbox.New(sandbox.Config{Mode: mode, SharedDir: c.SharedDir, Logger: log.WithField("layer", "sandbox")})
	if err != nil {
		log.Error(err)
		return exitFailure
	}
	if sb.Child() {
		c.SocketPath = "" // the parent made it and removes it
	} else {
		for _, w := range append(logWarnings, c.Warnings...) {
			log.Warn(w)
		}
		if c.SharedDir != "" {
			log.Infof("sharing %s (sandbox %s, cache %s)", c.SharedDir, mode, c.Cache)
		}
	}
	var claim *socketClaim
	l, err := sb.Listener(func() (*net.UnixListener, error) {
		l, cl, err := listen(&c)
		claim = cl
		return l, err
	})
	if err != nil {
		log.Error(err)
		return exitFailure
	}
	defer func() {
		if c.SocketPath != "" {
			os.Remove(c.SocketPath)
		}
		claim.release()
	}()
	box, err := sb.Enter(ctx, l)
	if err != nil {
		log.Error(err)
		return exitFailure
	}
	if box.Exited { // namespace mode's parent: the sandboxed child has run
		return box.ExitCode
	}
	if box.Confined { // host paths mean nothing in here
		c.SharedDir, c.SocketPath = box.SharedDir, ""
		claim.forget() // the pid file's path would now name a file in the share
	}

	obs := newObserver(c.Observe, log)
	defer obs.close()
	fs, mountOpts, cleanup, err := buildRoot(ctx, &c, box.ProcSelfFD, log, exit, obs)
	if err != nil {
		log.Error(err)
		return exitFailure
	}
	// READDIRPLUS is offered in INIT, once per device, whatever it serves.
	mountOpts.DisableReadDirPlus = mountOpts.DisableReadDirPlus || c.NoReadDirPlus
	if err := obs.serve(ctx); err != nil {
		log.Error(err)
		cleanup()
		return exitFailure
	}
	defer func() {
		cancel(nil)
		cleanup()
	}()
	dev := &sessionCounter{Device: fusewire.NewDevice(fs, fusewire.Options{
		RequestQueues:     c.RequestQueues,
		AnnounceSubmounts: c.AnnounceSubmounts,
		Logger:            log.WithField("layer", "fuse"),
		Mount:             mountOpts,
		Observer:          obs.d.Transport,
	})}

	if err := confine(&c, box.Confiner, log); err != nil {
		log.Error(err)
		return 1
	}
	vlog := log.WithField("layer", "vhost-user")
	procs := &vhostuser.ProcReserve{}
	go refreshProcs(ctx, procs)
	err = vhostuser.Serve(ctx, l, dev, vhostuser.Options{
		RequestQueues:   c.RequestQueues,
		Workers:         max(c.ThreadPoolSize, vhostuser.DefaultWorkers),
		KickWait:        vhostuser.KickWait(c.KickWait),
		Procs:           procs,
		PollBeforeSleep: c.PollBeforeSleep,
		KeepListening:   c.KeepListening,
		Logger:          vlog,
		OnWaiting:       announceWaiting(vlog),
		// Diagnostics of lost virtqueue notifications (docs/notifications.md).
		DumpSignal:      syscall.SIGUSR1,
		IdleObserveOnly: os.Getenv("NVFS_IDLE_OBSERVE_ONLY") == "1",
	})
	if err != nil {
		log.WithError(err).Error("vhost-user session failed")
		return exitFailure
	}
	log.Info(exitReason(ctx, dev.sessions.Load()))
	return exitOK
}

// procsRefresh is how often the daemon puts its GOMAXPROCS reserve back on
// the runtime's current default (vhostuser.ProcReserve.Refresh): a Kata
// sandbox's CPU quota changes as containers join it, and the runtime,
// which checks once a second, stops following it once GOMAXPROCS is set.
const procsRefresh = 5 * time.Second

// refreshProcs calls p.Refresh every procsRefresh until ctx ends.
func refreshProcs(ctx context.Context, p *vhostuser.ProcReserve) {
	t := time.NewTicker(procsRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.Refresh()
		}
	}
}

// announceWaiting is the daemon's vhostuser.Options.OnWaiting. Kata's
// runtime-rs reads stderr for the waiting line verbatim, whatever the log
// destination or level, so it goes there as it is; a log kept elsewhere
// (--log-file, --syslog) records it too.
func announceWaiting(log *logrus.Entry) func() {
	logsToStderr := log.Logger.Out == os.Stderr
	return func() {
		fmt.Fprintln(os.Stderr, waitingLine)
		if !logsToStderr {
			log.Info(waitingLine)
		}
	}
}

// exitReason says why the daemon stops, after vhostuser.Serve returned
// cleanly having served sessions frontends.
func exitReason(ctx context.Context, sessions int64) string {
	cause := context.Cause(ctx)
	switch {
	case cause == nil:
		return "frontend disconnected, exiting"
	case sessions == 0:
		return fmt.Sprintf("%v before any frontend connected, exiting", cause)
	}
	return fmt.Sprintf("%v, exiting", cause)
}

// sessionCounter counts the frontend sessions a device served.
type sessionCounter struct {
	vhostuser.Device
	sessions atomic.Int64
}

func (s *sessionCounter) StartSession() {
	s.sessions.Add(1)
	if o, ok := s.Device.(vhostuser.SessionObserver); ok {
		o.StartSession()
	}
}

func (s *sessionCounter) EndSession() {
	if o, ok := s.Device.(vhostuser.SessionObserver); ok {
		o.EndSession()
	}
}

// checkDir returns an error naming flag and dir unless dir is a directory.
func checkDir(flag, dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s %s: no such directory", flag, dir)
	case err != nil:
		return fmt.Errorf("%s %s: %w", flag, dir, err)
	case !fi.IsDir():
		return fmt.Errorf("%s %s: not a directory", flag, dir)
	}
	return nil
}

// buildRoot makes the filesystem the device serves and what releases it:
// with virtiofsd's command line the share or image itself, with nydusd's a
// mount table (and its HTTP API). exit stops the daemon.
func buildRoot(ctx context.Context, c *daemonConfig, procSelfFD *os.File, log logrus.FieldLogger, exit func(), obs *observer) (fuse.RawFileSystem, fuse.MountOptions, func(), error) {
	if c.Nydusd {
		fs, cleanup, err := buildTable(ctx, c, procSelfFD, log, exit, obs)
		return fs, fuse.MountOptions{}, cleanup, err
	}
	var rc *backend.Config
	if c.ConfigFile != "" {
		var err error
		if rc, err = backend.LoadConfig(c.ConfigFile); err != nil {
			return nil, fuse.MountOptions{}, nil, fmt.Errorf("--config: %w", err)
		}
	}
	caches := storage.NewPool(log.WithField("layer", "storage"))
	fs, mo, closeFS, err := buildFS(c, rc, caches, procSelfFD, log)
	if err != nil {
		caches.Close()
		return nil, mo, nil, err
	}
	obs.setCaches(caches)
	return obs.wrap("/", fs, rc), mo, func() { closeFS(); caches.Close() }, nil
}

// buildFS makes a filesystem to serve: a passthrough share of a host
// directory, or a RAFS image whose blobs come from --blob-dir, else from
// the backend of the nydusd configuration rc, else from the image's own
// directory. procSelfFD is the sandbox's fd of /proc/self/fd (nil:
// passthrough opens it).
func buildFS(c *daemonConfig, rc *backend.Config, caches *storage.Pool, procSelfFD *os.File, log logrus.FieldLogger) (fuse.RawFileSystem, fuse.MountOptions, func() error, error) {
	var mo fuse.MountOptions
	nop := func() error { return nil }
	var prefetch []string
	if c.PrefetchFiles != "" {
		var err error
		if prefetch, err = readPrefetchFile(c.PrefetchFiles); err != nil {
			return nil, mo, nil, err
		}
	}
	if c.Bootstrap != "" && c.BlobDir == "" && rc != nil {
		// The config's backend, blob cache and prefetch; --prefetch-files
		// replaces the bootstrap's prefetch table, as in nydusd.
		img, closeImg, err := api.OpenRafs(c.Bootstrap, rc, caches, prefetch, log.WithField("layer", "rafs"))
		if err != nil {
			return nil, mo, nil, fmt.Errorf("open image: %w", err)
		}
		if len(prefetch) > 0 {
			log.Infof("prefetching the %d paths listed in %s", len(prefetch), c.PrefetchFiles)
		}
		return rafs.NewFS(img, rafs.FSOptions{}), mo, closeImg, nil
	}
	if len(prefetch) > 0 {
		log.Warnf("--prefetch-files: ignored: the image's blobs are local files (%s) with no blob cache to fill; "+
			"a --config with a backend and a cache prefetches", blobSource(c, rc))
	}
	if c.Bootstrap != "" {
		dir := c.BlobDir
		if dir == "" {
			dir = filepath.Dir(c.Bootstrap)
		}
		img, err := rafs.Open(c.Bootstrap, rafs.Options{
			Backend:        backend.NewLocalFS(dir),
			DigestValidate: rc != nil && rc.DigestValidate(),
			Log:            log.WithField("layer", "rafs"),
		})
		if err != nil {
			return nil, mo, nil, flagPathError("--bootstrap", c.Bootstrap, err)
		}
		if err := img.VerifyBlobs(context.Background()); err != nil {
			img.Close()
			return nil, mo, nil, fmt.Errorf("--bootstrap %s: %w", c.Bootstrap, err)
		}
		log.WithField("bootstrap", c.Bootstrap).WithField("blobs", blobSource(c, rc)).
			Infof("serving RAFS v%d image %s (%d blobs)", img.Version(), c.Bootstrap, len(img.BlobIDs()))
		return rafs.NewFS(img, rafs.FSOptions{}), mo, img.Close, nil
	}
	popts := c.passthroughOptions(procSelfFD)
	popts.Xattr, popts.ReadOnly, popts.AllowDirectIO = c.Xattr, c.Readonly, c.AllowDirectIO
	popts.Logger = log.WithField("layer", "passthrough")
	fs, err := passthrough.New(c.SharedDir, popts)
	if err != nil {
		return nil, mo, nil, fmt.Errorf("--shared-dir %s: %w", c.SharedDir, err)
	}
	mo.DisableReadDirPlus = !popts.ReadDirPlus()
	mo.DisableXAttrs = !c.Xattr
	return fs, mo, nop, nil
}

// passthroughOptions are the options every directory the daemon shares
// gets from its command line, --shared-dir's and nydusd mode's API mounts
// alike. InodeFileHandles must be the same everywhere: it also decides
// whether the daemon keeps CAP_DAC_READ_SEARCH (confine), without which a
// mount using file handles fails at its first open_by_handle_at.
func (c *daemonConfig) passthroughOptions(procSelfFD *os.File) passthrough.Options {
	return passthrough.Options{
		Cache:             c.Cache,
		XattrMap:          c.xattrMap(),
		AnnounceSubmounts: c.AnnounceSubmounts,
		InodeFileHandles:  c.InodeFileHandles,
		ProcSelfFD:        procSelfFD,
	}
}

// blobSource says where an image's blobs are looked up, for the log.
func blobSource(c *daemonConfig, rc *backend.Config) string {
	switch {
	case c.BlobDir != "":
		return c.BlobDir
	case rc != nil:
		return "the --config backend"
	}
	return filepath.Dir(c.Bootstrap) + " (the bootstrap's directory)"
}

// lookupGroup resolves --socket-group: a group name, or a number.
func lookupGroup(name string) (int, error) {
	if g, err := user.LookupGroup(name); err == nil {
		return strconv.Atoi(g.Gid)
	}
	if gid, err := strconv.Atoi(name); err == nil && gid >= 0 {
		return gid, nil
	}
	return 0, fmt.Errorf("--socket-group=%s: no such group", name)
}

// listen opens the vhost-user socket: a path to listen on (claimed first,
// see claimSocket), or an inherited listening fd.
func listen(c *daemonConfig) (*net.UnixListener, *socketClaim, error) {
	if c.FD >= 0 {
		l, err := vhostuser.ListenerFromFD(c.FD)
		if err != nil {
			return nil, nil, fmt.Errorf("--fd=%d: %w", c.FD, err)
		}
		return l, nil, nil
	}
	claim, err := claimSocket(c.SocketFlag, c.SocketPath)
	if err != nil {
		return nil, nil, err
	}
	var l *net.UnixListener
	if c.SocketGroup != "" {
		var gid int
		if gid, err = lookupGroup(c.SocketGroup); err == nil {
			l, err = vhostuser.ListenGroup(c.SocketPath, gid)
		}
	} else {
		l, err = vhostuser.Listen(c.SocketPath)
	}
	if err != nil {
		claim.release()
		return nil, nil, fmt.Errorf("%s %s: %w", c.SocketFlag, c.SocketPath, err)
	}
	return l, claim, nil
}
