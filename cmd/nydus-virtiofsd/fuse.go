package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/hostmount"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// runFuse is `nydusd fuse`: mount an image on the host through /dev/fuse,
// stay in the foreground and unmount on SIGTERM or SIGINT.
func runFuse(args []string) int {
	fs := newFlagSet("fuse", "--bootstrap B (--blob-dir D | --config C) --mountpoint M")
	var f imageFlags
	f.register(fs, true)
	mountpoint := fs.String("mountpoint", "", "where to mount the image")
	debug := fs.Bool("debug", false, "log every FUSE request")
	logLevel := fs.String("log-level", "info", "log level (trace, debug, info, warn, error)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if lvl, err := logrus.ParseLevel(*logLevel); err == nil {
		logrus.SetLevel(lvl)
	} else {
		return failf("fuse", "--log-level: %v", err)
	}
	if *mountpoint == "" {
		return failf("fuse", "--mountpoint is required")
	}
	if f.blobDir == "" && f.blob == "" && f.config == "" {
		return failf("fuse", "one of --blob-dir, --blob or --config is required")
	}
	img, err := f.open(true)
	if err != nil {
		return failf("fuse", "%v", err)
	}
	defer img.Close()
	srv, err := hostmount.Mount(rafs.NewFS(img, rafs.FSOptions{}), *mountpoint, hostmount.MountOptions(*debug))
	if err != nil {
		return failf("fuse", "%v", err)
	}
	logrus.Infof("serving RAFS v%d image %s at %s", img.Version(), f.bootstrap, *mountpoint)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() { srv.Wait(); close(done) }()
	select {
	case s := <-sigs:
		logrus.Infof("%v: unmounting %s", s, *mountpoint)
		if err := srv.Unmount(); err != nil {
			return failf("fuse", "unmount: %v", err)
		}
		<-done
	case <-done:
		logrus.Infof("%s was unmounted", *mountpoint)
	}
	return 0
}
