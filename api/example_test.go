package api_test

import (
	"context"
	"os"
	"runtime"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/api"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/fusewire"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/passthrough"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vfs"
)

// Example wires nydusd's virtiofs mode: an empty pseudo root (or the
// --shared-dir/--bootstrap filesystem at --virtual-mountpoint) served over
// vhost-user, and the API on --apisock mounting more while the guest runs.
func Example() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	log := logrus.NewEntry(logrus.StandardLogger())
	sharedDir, virtualMountpoint, apiSock := "", "/", "/run/vc/vm/sid/nydusd-api.sock"

	table := vfs.New(vfs.Options{Logger: log.WithField("layer", "vfs")})
	defer table.Close()
	if sharedDir != "" { // or a RAFS image for --bootstrap, with Type api.BackendRafs
		fs, err := passthrough.New(sharedDir, passthrough.Options{Xattr: true, Logger: log})
		if err != nil {
			log.Fatal(err)
		}
		if err := table.Mount(virtualMountpoint, vfs.Mount{FS: fs, Type: api.BackendPassthrough}); err != nil {
			log.Fatal(err)
		}
	}
	dev := fusewire.NewDevice(table, fusewire.Options{Logger: log.WithField("layer", "fuse")})
	_ = dev // handed to vhostuser.Serve

	s, err := api.New(api.Options{
		VFS:     table,
		NewFS:   api.DefaultNewFS(api.FSOptions{Logger: log}), // RafsConfig: the --config file, if any
		Version: api.Version{PackageVer: "v0.1.0", GitCommit: "unknown", BuildTime: "unknown", Profile: "release", Rustc: runtime.Version()},
		Exit:    stop, // PUT /api/v1/daemon/exit: the same path as SIGTERM
		Logger:  log.WithField("layer", "api"),
	})
	if err != nil {
		log.Fatal(err)
	}
	if apiSock == "" {
		return
	}
	l, err := api.Listen(apiSock)
	if err != nil {
		return // in this example the directory does not exist
	}
	defer os.Remove(apiSock)
	go s.Serve(ctx, l) // before vhostuser.Serve: Kata polls the API before starting the VMM
}
