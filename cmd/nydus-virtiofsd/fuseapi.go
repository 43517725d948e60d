package main

import (
	"context"
	"fmt"
	"os"
	"path"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/api"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vfs"
)

// fuseMountID is the id of the fuse mode's image in the API (nydusd's
// fuse mode mounts its image at the virtual root too).
const fuseMountID = "/"

// fuseTable is the API's view of the fuse mode's one image: listed, and
// counted, but no mounts can be added or removed through the API.
type fuseTable struct{ info vfs.MountInfo }

func (t fuseTable) refuse(p string) error {
	return fmt.Errorf("%s: %w: the fuse mode serves one image; start another daemon for another", p, api.ErrUnsupported)
}

func (t fuseTable) Mount(p string, _ vfs.Mount) error   { return t.refuse(p) }
func (t fuseTable) Umount(p string) error               { return t.refuse(p) }
func (t fuseTable) Remount(p string, _ vfs.Mount) error { return t.refuse(p) }
func (t fuseTable) Mounts() []vfs.MountInfo             { return []vfs.MountInfo{t.info} }

func (t fuseTable) Info(p string) (vfs.MountInfo, error) {
	if path.Clean(p) != t.info.Path {
		return vfs.MountInfo{}, fmt.Errorf("vfs: %s: %w", p, vfs.ErrNotFound)
	}
	return t.info, nil
}

// serveFuseAPI serves nydusd's API for the fuse mode's image on sock until
// ctx ends; the returned function waits for it and removes the socket.
func serveFuseAPI(ctx context.Context, sock string, obs *observer, log *logrus.Entry) (func(), error) {
	srv, err := api.New(api.Options{
		VFS: fuseTable{info: vfs.MountInfo{Path: fuseMountID, Type: api.BackendRafs, MountedTime: time.Now()}},
		Version: api.Version{PackageVer: version, GitCommit: gitCommit(), BuildTime: "unknown", Profile: "release",
			Rustc: "go"},
		Logger:     log.WithField("layer", "api"),
		Metrics:    obs.d,
		Prometheus: obs.prom,
	})
	if err != nil {
		return nil, err
	}
	if err := socketDirError("--apisock", sock); err != nil {
		return nil, err
	}
	l, err := api.Listen(sock)
	if err != nil {
		return nil, fmt.Errorf("--apisock %s: %w", sock, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ctx, l); err != nil {
			log.WithError(err).Error("api server stopped")
		}
	}()
	return func() { <-done; os.Remove(sock) }, nil
}
