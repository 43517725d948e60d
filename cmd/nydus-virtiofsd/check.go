package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// imageFlags are the flags that say which image to open and where its
// blobs are, shared by check, unpack and fuse.
type imageFlags struct {
	bootstrap, blobDir, blob, config string
	validate                         bool
}

func (f *imageFlags) register(fs *flag.FlagSet, withConfig bool) {
	fs.StringVar(&f.bootstrap, "bootstrap", "", "RAFS bootstrap, or a blob with an inlined bootstrap")
	fs.StringVar(&f.blobDir, "blob-dir", "", "directory holding the blobs, each named by its id (localfs)")
	fs.StringVar(&f.blob, "blob", "", "one blob file serving every blob id")
	fs.BoolVar(&f.validate, "digest-validate", false, "check every chunk read against its digest")
	if withConfig {
		fs.StringVar(&f.config, "config", "", "nydusd configuration file (v1 or v2 JSON)")
	}
}

// open opens the image; needBlobs picks a default backend (the
// bootstrap's directory) when no blob source was given.
func (f *imageFlags) open(needBlobs bool) (*rafs.Image, error) {
	if f.bootstrap == "" {
		return nil, errors.New("--bootstrap is required")
	}
	opts := rafs.Options{DigestValidate: f.validate, Log: logrus.StandardLogger()}
	switch {
	case f.config != "":
		if f.blobDir != "" || f.blob != "" {
			return nil, errors.New("--config and --blob-dir/--blob are exclusive")
		}
		c, err := backend.LoadConfig(f.config)
		if err != nil {
			return nil, err
		}
		if opts.Backend, err = c.NewBackend(backend.Options{Getenv: os.Getenv, Log: logrus.WithField("layer", "backend")}); err != nil {
			return nil, err
		}
		opts.DigestValidate = opts.DigestValidate || c.DigestValidate()
	case f.blobDir != "" || f.blob != "":
		opts.Backend = &backend.LocalFS{Dir: f.blobDir, BlobFile: f.blob}
	case needBlobs:
		opts.Backend = backend.NewLocalFS(filepath.Dir(f.bootstrap))
	}
	return rafs.Open(f.bootstrap, opts)
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: nydus-virtiofsd %s %s\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

func failf(cmd string, format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "nydus-virtiofsd %s: %s\n", cmd, fmt.Sprintf(format, args...))
	return 1
}

// runCheck is `nydus-image check`: parse and validate an image, and verify
// chunk digests when the blobs are present.
func runCheck(args []string) int {
	fs := newFlagSet("check", "--bootstrap B [--blob-dir D] [--verbose]")
	var f imageFlags
	f.register(fs, true)
	verbose := fs.Bool("verbose", false, "list every inode")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	img, err := f.open(false)
	if err != nil {
		return failf("check", "%v", err)
	}
	defer img.Close()
	r, err := img.Check(context.Background(), rafs.CheckOptions{Verbose: *verbose, Out: os.Stdout})
	if err != nil {
		return failf("check", "%s: %v", f.bootstrap, err)
	}
	fmt.Printf("RAFS v%d image %s is consistent: %d directories, %d files (%d bytes), %d symlinks, %d others; blobs %v\n",
		img.Version(), f.bootstrap, r.Dirs, r.Files, r.FileBytes, r.Symlinks, r.Others, img.BlobIDs())
	fmt.Printf("chunks verified: %d, without digest: %d", r.ChunksVerified, r.ChunksUnverified)
	if len(r.MissingBlobs) > 0 {
		fmt.Printf(", blobs not present (data not verified): %v", r.MissingBlobs)
	}
	fmt.Println()
	return 0
}
