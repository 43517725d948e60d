package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/sirupsen/logrus"
	"github.com/spf13/pflag"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
)

// imageFlags are the flags that say which image to open and where its
// blobs are, shared by check, unpack and fuse.
type imageFlags struct {
	bootstrap, blobDir, blob, config string
	validate                         bool
	// cache is the blob cache the --config cache section names (nil
	// without one); closeCache closes it after the image.
	cache *storage.Manager
}

// closeCache closes the blob cache open opened, if any, syncing and
// marking what it stored. Call it after the image is closed.
func (f *imageFlags) closeCache() error {
	if f.cache == nil {
		return nil
	}
	err := f.cache.Close()
	f.cache = nil
	return err
}

func (f *imageFlags) register(fs *pflag.FlagSet) {
	fs.StringVarP(&f.bootstrap, "bootstrap", "B", "", "RAFS bootstrap, or a blob with the bootstrap inlined (required)")
	fs.StringVarP(&f.blobDir, "blob-dir", "D", "", "directory holding the blobs, each file named by its blob id (nydusd's localfs backend)")
	fs.StringVar(&f.blobDir, "localfs-dir", "", "the same as --blob-dir (nydusd's name)")
	fs.StringVar(&f.blob, "blob", "", "one blob file serving every blob id")
	fs.StringVarP(&f.config, "config", "C", "", "nydusd configuration file (v1 or v2, JSON or TOML) naming the backend and cache")
	fs.BoolVar(&f.validate, "digest-validate", false, "verify every chunk read against its digest")
	fs.Lookup("localfs-dir").Hidden = true
}

// hasBlobSource reports whether the command line says where the blobs are.
func (f *imageFlags) hasBlobSource() bool {
	return f.blobDir != "" || f.blob != "" || f.config != ""
}

// open opens the image. With no blob source, needBlobs looks for the blobs
// beside the bootstrap; otherwise the image is opened without blob data.
func (f *imageFlags) open(needBlobs bool, log logrus.FieldLogger) (*rafs.Image, error) {
	if f.bootstrap == "" {
		return nil, usageErrorf("--bootstrap is required")
	}
	opts := rafs.Options{DigestValidate: f.validate, Log: log}
	switch {
	case f.config != "":
		if f.blobDir != "" || f.blob != "" {
			return nil, usageErrorf("--config and --blob-dir/--blob are exclusive")
		}
		c, err := backend.LoadConfig(f.config)
		if err != nil {
			return nil, fmt.Errorf("--config %s: %w", f.config, err)
		}
		if opts.Backend, err = c.NewBackend(backend.Options{Getenv: os.Getenv, Log: logrus.WithField("layer", "backend")}); err != nil {
			return nil, err
		}
		opts.DigestValidate = opts.DigestValidate || c.DigestValidate()
		// The config's cache section (blobcache/filecache keep what is
		// fetched in work_dir, as the daemon's mounts do); a cache type
		// the storage layer does not serve (fscache) reads through.
		if set := storage.SettingsFromConfig(c); storage.ValidType(set.Cache.Type) {
			set.Cache.Log = log
			if f.cache, err = storage.NewManager(set.Cache); err != nil {
				return nil, fmt.Errorf("--config %s: %w", f.config, err)
			}
			opts.Cache = f.cache
		}
	case f.blobDir != "" || f.blob != "":
		opts.Backend = &backend.LocalFS{Dir: f.blobDir, BlobFile: f.blob}
	case needBlobs:
		opts.Backend = backend.NewLocalFS(filepath.Dir(f.bootstrap))
	}
	img, err := rafs.Open(f.bootstrap, opts)
	if err != nil {
		f.closeCache()
		return nil, flagPathError("--bootstrap", f.bootstrap, err)
	}
	f.validate = opts.DigestValidate
	return img, nil
}

// openVerified opens the image for reading its data: every blob must
// open, or the error names the missing ones and where they were looked
// for.
func (f *imageFlags) openVerified(log logrus.FieldLogger) (*rafs.Image, error) {
	img, err := f.open(true, log)
	if err != nil {
		return nil, err
	}
	if err := img.VerifyBlobs(context.Background()); err != nil {
		img.Close()
		f.closeCache()
		return nil, fmt.Errorf("%s: %w", f.bootstrap, err)
	}
	return img, nil
}

// quietImageLog is the image's logger in check and unpack, which return
// the first read failure as their error: at the levels below debug, the
// image's own report of it (meant for a daemon, whose reads fail with a
// bare EIO) would say it a second time.
func quietImageLog(l *logrus.Logger) logrus.FieldLogger {
	if l.IsLevelEnabled(logrus.DebugLevel) {
		return l
	}
	q := logrus.New()
	q.SetOutput(l.Out)
	q.SetFormatter(l.Formatter)
	q.SetLevel(logrus.FatalLevel)
	return q
}

// addLogLevel registers --log-level.
func addLogLevel(fs *pflag.FlagSet) *string {
	return fs.StringP("log-level", "l", "info", "log level: error, warn, info, debug, trace or off")
}

const checkLong = `Validate a RAFS image as nydus-image check does: every inode decodes, directories
are sorted and acyclic, every name looks up, v5 digests match; and, when told where
the blobs are (--blob-dir, --blob or --config), every chunk's data is read and checked
against its digest. A blob that cannot be opened then fails the check (exit 1).
Without a blob source only the metadata is checked, and the report says so.`

// runCheck is `nydus-image check`.
func runCheck(args []string) int {
	if hasTargetFlag(args) {
		return runCheckTarget(args)
	}
	cmd := newCommand("check", "--bootstrap FILE [--blob-dir DIR | --blob FILE | --config FILE] [--verbose]", checkLong)
	var f imageFlags
	f.register(cmd.Flags())
	verbose := cmd.Flags().BoolP("verbose", "v", false, "list every inode: number, mode, links, size, path")
	logLevel := addLogLevel(cmd.Flags())
	return execute(cmd, args, func([]string) error {
		log, err := toolLogger(*logLevel, "")
		if err != nil {
			return err
		}
		defer f.closeCache() // after the image
		img, err := f.open(false, quietImageLog(log))
		if err != nil {
			return err
		}
		defer img.Close()
		if f.hasBlobSource() {
			if err := img.VerifyBlobs(context.Background()); err != nil {
				return fmt.Errorf("%s: cannot verify the data: %w", f.bootstrap, err)
			}
		}
		if *verbose {
			fmt.Printf("%8s %7s %4s %10s %s\n", "INODE", "MODE", "LINK", "SIZE", "PATH")
		}
		r, err := img.Check(context.Background(), rafs.CheckOptions{Verbose: *verbose, Out: os.Stdout})
		if err != nil {
			return fmt.Errorf("%s: %w", f.bootstrap, err)
		}
		fmt.Printf("RAFS v%d image %s is consistent: %d directories, %d files (%d bytes), %d symlinks, %d others; blobs %v\n",
			img.Version(), f.bootstrap, r.Dirs, r.Files, r.FileBytes, r.Symlinks, r.Others, img.BlobIDs())
		switch {
		case !f.hasBlobSource():
			fmt.Println("data not verified: metadata only (give --blob-dir, --blob or --config to verify the chunks)")
		case len(r.MissingBlobs) > 0:
			return fmt.Errorf("%s: cannot verify the data: blobs not found: %v", f.bootstrap, r.MissingBlobs)
		default:
			fmt.Printf("chunks verified: %d, without digest: %d\n", r.ChunksVerified, r.ChunksUnverified)
		}
		return nil
	})
}
