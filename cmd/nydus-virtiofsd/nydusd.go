package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/api"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/passthrough"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vfs"
)

// buildTable makes nydusd's virtiofs root: a mount table holding the
// --shared-dir or --bootstrap filesystem at --virtual-mountpoint (when
// given), and, with --apisock, nydusd's HTTP API serving mounts into it
// until ctx ends. exit is what PUT /api/v1/daemon/exit calls. The returned
// cleanup closes the API socket and the table.
func buildTable(ctx context.Context, c *daemonConfig, procSelfFD *os.File, log logrus.FieldLogger, exit func(), obs *observer) (fuse.RawFileSystem, func(), error) {
	var rafsConfig *backend.Config
	if c.ConfigFile != "" {
		rc, err := backend.LoadConfig(c.ConfigFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--config: %w", err)
		}
		rafsConfig = rc
	}
	table := vfs.New(vfs.Options{Logger: log.WithField("layer", "vfs")})
	// The blob caches of every RAFS mount, closed after the table.
	caches := storage.NewPool(log.WithField("layer", "storage"))
	obs.setCaches(caches)
	closeTable := func() { table.Close(); caches.Close() }
	cleanup := closeTable
	if c.SharedDir != "" || c.Bootstrap != "" {
		fs, _, closeFS, err := buildFS(c, rafsConfig, caches, procSelfFD, log)
		if err != nil {
			closeTable()
			return nil, nil, err
		}
		typ := api.BackendPassthrough
		if c.Bootstrap != "" {
			typ = api.BackendRafs
		}
		fs = obs.wrap(c.VirtualMountpoint, fs, rafsConfig)
		if err := table.Mount(c.VirtualMountpoint, vfs.Mount{FS: fs, Type: typ, Close: closeFS}); err != nil {
			closeFS()
			closeTable()
			return nil, nil, fmt.Errorf("mount at %s: %w", c.VirtualMountpoint, err)
		}
	}
	if c.APISock == "" {
		return table, cleanup, nil
	}
	srv, err := api.New(api.Options{
		VFS:        table,
		ID:         c.ID,
		Supervisor: c.Supervisor,
		Version: api.Version{
			PackageVer: version,
			GitCommit:  gitCommit(),
			BuildTime:  "unknown",
			Profile:    "release",
			Rustc:      runtime.Version(),
		},
		NewFS: api.DefaultNewFS(api.FSOptions{
			RafsConfig:  rafsConfig,
			Passthrough: apiPassthrough(c, procSelfFD),
			Logger:      log,
			Caches:      caches,
		}),
		Exit:       exit,
		Logger:     log.WithField("layer", "api"),
		Caches:     caches,
		Metrics:    obs.d,
		Prometheus: obs.prom,
	})
	if err != nil {
		closeTable()
		return nil, nil, fmt.Errorf("api: %w", err)
	}
	if err := socketDirError("--apisock", c.APISock); err != nil {
		table.Close()
		return nil, nil, err
	}
	l, err := api.Listen(c.APISock)
	if err != nil {
		closeTable()
		return nil, nil, fmt.Errorf("--apisock %s: %w", c.APISock, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ctx, l); err != nil {
			log.WithError(err).Error("api server stopped")
		}
	}()
	apiSock := c.APISock
	return table, func() {
		<-done // Serve returns once ctx ends
		os.Remove(apiSock)
		closeTable()
	}, nil
}

// gitCommit is the commit the binary was built from, when Go recorded it.
func gitCommit() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// apiPassthrough is the options of passthrough mounts made through the
// API: the command line's, with extended attributes on (nydusd's).
func apiPassthrough(c *daemonConfig, procSelfFD *os.File) passthrough.Options {
	o := c.passthroughOptions(procSelfFD)
	o.Xattr = true
	return o
}
