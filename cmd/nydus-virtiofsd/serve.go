package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

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
const waitingLine = "Waiting for vhost-user socket connection..."

// runDaemon runs the virtio-fs daemon that c describes until the frontend
// disconnects (or, with KeepListening, until SIGTERM/SIGINT) and returns the
// exit code.
func runDaemon(c daemonConfig) int {
	log := newLogger(&c)
	if n, err := passthrough.RaiseNofileLimit(); err != nil {
		log.WithError(err).Warn("cannot raise RLIMIT_NOFILE")
	} else {
		log.Debugf("RLIMIT_NOFILE %d", n)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	mode := sandbox.Mode(c.Sandbox)
	if c.Bootstrap != "" {
		mode = sandbox.None // an image needs its bootstrap and blobs: only --shared-dir is sandboxed
	}
	sb, err := sandbox.New(sandbox.Config{Mode: mode, SharedDir: c.SharedDir, Logger: log.WithField("layer", "sandbox")})
	if err != nil {
		log.Error(err)
		return 1
	}
	if sb.Child() {
		c.SocketPath = "" // the parent made it and removes it
	} else {
		for _, w := range c.Warnings {
			log.Warn(w)
		}
	}
	l, err := sb.Listener(func() (*net.UnixListener, error) { return listen(&c) })
	if err != nil {
		log.Error(err)
		return 1
	}
	defer func() {
		if c.SocketPath != "" {
			os.Remove(c.SocketPath)
		}
	}()
	box, err := sb.Enter(ctx, l)
	if err != nil {
		log.Error(err)
		return 1
	}
	if box.Exited { // namespace mode's parent: the sandboxed child has run
		return box.ExitCode
	}
	if box.Confined { // host paths mean nothing in here
		c.SharedDir, c.SocketPath = box.SharedDir, ""
	}

	fs, mountOpts, cleanup, err := buildRoot(ctx, &c, box.ProcSelfFD, log, stop)
	if err != nil {
		log.Error(err)
		return 1
	}
	defer func() {
		stop()
		cleanup()
	}()
	dev := fusewire.NewDevice(fs, fusewire.Options{
		RequestQueues:     c.RequestQueues,
		AnnounceSubmounts: c.AnnounceSubmounts,
		Logger:            log.WithField("layer", "fuse"),
		Mount:             mountOpts,
	})

	// Kata's runtime-rs reads stderr for this exact line, whatever the log
	// destination or level.
	fmt.Fprintln(os.Stderr, waitingLine)
	err = vhostuser.Serve(ctx, l, dev, vhostuser.Options{
		RequestQueues: c.RequestQueues,
		Workers:       max(c.ThreadPoolSize, vhostuser.DefaultWorkers),
		KeepListening: c.KeepListening,
		Logger:        log.WithField("layer", "vhost-user"),
	})
	if err != nil {
		log.WithError(err).Error("vhost-user session failed")
		return 1
	}
	log.Info("frontend gone, exiting")
	return 0
}

// buildRoot makes the filesystem the device serves and what releases it:
// with virtiofsd's command line the share or image itself, with nydusd's a
// mount table (and its HTTP API). exit stops the daemon.
func buildRoot(ctx context.Context, c *daemonConfig, procSelfFD *os.File, log *logrus.Entry, exit func()) (fuse.RawFileSystem, fuse.MountOptions, func(), error) {
	if c.Nydusd {
		fs, cleanup, err := buildTable(ctx, c, procSelfFD, log, exit)
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
	return fs, mo, func() { closeFS(); caches.Close() }, nil
}

// buildFS makes a filesystem to serve: a passthrough share of a host
// directory, or a RAFS image whose blobs come from --blob-dir, else from
// the backend of the nydusd configuration rc, else from the image's own
// directory. procSelfFD is the sandbox's fd of /proc/self/fd (nil:
// passthrough opens it).
func buildFS(c *daemonConfig, rc *backend.Config, caches *storage.Pool, procSelfFD *os.File, log *logrus.Entry) (fuse.RawFileSystem, fuse.MountOptions, func() error, error) {
	var mo fuse.MountOptions
	nop := func() error { return nil }
	if c.Bootstrap != "" && c.BlobDir == "" && rc != nil {
		// The config's backend, blob cache and prefetch.
		img, closeImg, err := api.OpenRafs(c.Bootstrap, rc, caches, nil, log.WithField("layer", "rafs"))
		if err != nil {
			return nil, mo, nil, fmt.Errorf("open image: %w", err)
		}
		return rafs.NewFS(img, rafs.FSOptions{}), mo, closeImg, nil
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
			return nil, mo, nil, fmt.Errorf("open image: %w", err)
		}
		return rafs.NewFS(img, rafs.FSOptions{}), mo, img.Close, nil
	}
	popts := passthrough.Options{
		Cache:    c.Cache,
		Xattr:    c.Xattr,
		ReadOnly: c.Readonly,

		AllowDirectIO:     c.AllowDirectIO,
		AnnounceSubmounts: c.AnnounceSubmounts,
		InodeFileHandles:  c.InodeFileHandles,
		ProcSelfFD:        procSelfFD,
		Logger:            log.WithField("layer", "passthrough"),
	}
	fs, err := passthrough.New(c.SharedDir, popts)
	if err != nil {
		return nil, mo, nil, fmt.Errorf("share %s: %w", c.SharedDir, err)
	}
	mo.DisableReadDirPlus = !popts.ReadDirPlus()
	mo.DisableXAttrs = !c.Xattr
	return fs, mo, nop, nil
}

// listen opens the vhost-user socket: a path to listen on, or an inherited
// listening fd.
func listen(c *daemonConfig) (*net.UnixListener, error) {
	if c.FD >= 0 {
		l, err := vhostuser.ListenerFromFD(c.FD)
		if err != nil {
			return nil, fmt.Errorf("--fd=%d: %w", c.FD, err)
		}
		return l, nil
	}
	l, err := vhostuser.Listen(c.SocketPath)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", c.SocketPath, err)
	}
	return l, nil
}
