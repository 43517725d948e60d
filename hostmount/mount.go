package hostmount

import (
	"fmt"
	"os"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// MountOptions returns the go-fuse mount options for serving a RAFS
// filesystem on the host: read-only, direct mount(2) when root (no
// fusermount), kernel permission checks, and allow_other when root.
func MountOptions(debug bool) *fuse.MountOptions {
	root := os.Geteuid() == 0
	o := &fuse.MountOptions{
		FsName:       "rafs",
		Name:         "rafs",
		Debug:        debug,
		DirectMount:  root,
		AllowOther:   root,
		MaxReadAhead: 1 << 20,
		Options:      []string{"default_permissions"},
	}
	if root {
		o.DirectMountFlags = syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_RDONLY
	} else {
		o.Options = append(o.Options, "ro")
	}
	return o
}

// Mount mounts fs at mountpoint through /dev/fuse, starts serving it and
// waits until the mount is live. Unmount the returned server to stop.
func Mount(fs fuse.RawFileSystem, mountpoint string, opts *fuse.MountOptions) (*fuse.Server, error) {
	if opts == nil {
		opts = MountOptions(false)
	}
	srv, err := fuse.NewServer(fs, mountpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		srv.Unmount()
		return nil, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	return srv, nil
}
