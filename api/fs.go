package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/passthrough"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/vfs"
)

// The filesystem types of a mount request (after normalizeFsType), and
// the types the daemon info reports for a mount (nydusd's API calls them
// backend_type; elsewhere "backend" means a blob source, package backend).
const (
	FsRafs        = "rafs"
	FsPassthrough = "passthrough_fs"

	BackendRafs        = "Rafs"
	BackendPassthrough = "PassthroughFs"
)

func normalizeFsType(t string) (string, error) {
	switch t {
	case "rafs":
		return FsRafs, nil
	case "passthrough", "passthroughfs", "passthrough_fs":
		return FsPassthrough, nil
	}
	return "", fmt.Errorf("only 'rafs' and 'passthrough_fs' are supported, but %q was specified", t)
}

// MountRequest is a mount request's body, with FsType normalized to
// FsRafs or FsPassthrough.
type MountRequest struct {
	FsType        string
	Source        string
	Config        string
	PrefetchFiles []string
}

// NewFS builds the filesystem a mount request asks for. An *Error or an
// error wrapping ErrUnsupported or ErrBadRequest picks the status; any
// other error is a 500.
type NewFS func(req MountRequest) (vfs.Mount, error)

// FSOptions configure DefaultNewFS.
type FSOptions struct {
	// RafsConfig serves a RAFS mount whose config is "" (nydusd's
	// --config). Nil: such a mount fails.
	RafsConfig *backend.Config
	// Passthrough is the template of passthrough mounts; Xattr is always
	// on (nydusd's API mounts passthrough with xattr).
	Passthrough passthrough.Options
	// Logger for the filesystems; nil: logrus' standard logger.
	Logger logrus.FieldLogger
	// Caches holds the blob caches RAFS mounts read through, shared by
	// mounts naming the same cache directory. Nil: no cache directory is
	// used (every read goes to the backend).
	Caches *storage.Pool
}

// OpenRafs opens the RAFS image at source as cfg configures it: its
// backend, its blob cache (from caches, nil for none) and, when the config
// enables prefetch or prefetchFiles is not empty, a background prefetch.
// The returned function closes the image and releases its cache. Config
// errors wrap ErrBadRequest.
func OpenRafs(source string, cfg *backend.Config, caches *storage.Pool, prefetchFiles []string, log logrus.FieldLogger) (*rafs.Image, func() error, error) {
	be, err := cfg.NewBackend(backend.Options{Getenv: os.Getenv, Log: log.WithField("layer", "backend")})
	if err != nil {
		return nil, nil, fmt.Errorf("rafs config: %w: %w", ErrBadRequest, err)
	}
	set := storage.SettingsFromConfig(cfg)
	var mgr *storage.Manager
	release := func() error { return nil }
	if caches != nil {
		if mgr, release, err = caches.Get(set.Cache); err != nil {
			return nil, nil, fmt.Errorf("rafs config: %w: %w", ErrBadRequest, err)
		}
	}
	img, err := rafs.Open(source, rafs.Options{Backend: be, Cache: mgr, DigestValidate: cfg.DigestValidate(), Log: log})
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("rafs: %w", err)
	}
	closeImg := func() error { return errors.Join(img.Close(), release()) }
	if err := img.VerifyBlobs(context.Background()); err != nil {
		closeImg()
		return nil, nil, fmt.Errorf("rafs %s: %w", source, err)
	}
	if set.Prefetch || len(prefetchFiles) > 0 {
		if _, err := img.StartPrefetch(rafs.PrefetchOptions{Files: prefetchFiles, All: set.PrefetchAll}); err != nil {
			closeImg()
			return nil, nil, fmt.Errorf("prefetch_files: %w: %w", ErrBadRequest, err)
		}
	}
	return img, closeImg, nil
}

// DefaultNewFS builds passthrough shares and RAFS images. A RAFS config is
// a nydusd v1 or v2 JSON (or v2 TOML) string naming any backend of package
// backend; a config it refuses is a 400.
func DefaultNewFS(o FSOptions) NewFS {
	if o.Logger == nil {
		o.Logger = logrus.StandardLogger()
	}
	return func(req MountRequest) (vfs.Mount, error) {
		switch req.FsType {
		case FsPassthrough:
			po := o.Passthrough
			po.Xattr = true
			if po.Logger == nil {
				po.Logger = o.Logger.WithField("layer", "passthrough")
			}
			fs, err := passthrough.New(req.Source, po)
			if err != nil {
				return vfs.Mount{}, err
			}
			return vfs.Mount{FS: fs, Type: BackendPassthrough}, nil
		case FsRafs:
			cfg := o.RafsConfig
			if req.Config != "" {
				var err error
				if cfg, err = backend.ParseConfig([]byte(req.Config)); err != nil {
					return vfs.Mount{}, fmt.Errorf("rafs config: %w: %w", ErrBadRequest, err)
				}
			}
			if cfg == nil {
				return vfs.Mount{}, errors.New("rafs config: empty, and the daemon has no --config")
			}
			img, closeImg, err := OpenRafs(req.Source, cfg, o.Caches, req.PrefetchFiles,
				o.Logger.WithField("layer", "rafs").WithField("bootstrap", req.Source))
			if err != nil {
				return vfs.Mount{}, err
			}
			return vfs.Mount{FS: rafs.NewFS(img, rafs.FSOptions{}), Type: BackendRafs,
				Config: RedactConfig(req.Config), Close: closeImg}, nil
		}
		return vfs.Mount{}, fmt.Errorf("fs_type %q: %w", req.FsType, ErrUnsupported)
	}
}

// secretKeys are config keys that the daemon info never shows.
var secretKeys = map[string]bool{
	"auth": true, "registry_token": true, "password": true, "token": true,
	"access_key_secret": true, "secret_access_key": true, "session_token": true,
}

// RedactConfig returns a JSON config without its secrets, as the daemon
// info reports it (nil for "" or a non-JSON config). Use it for the
// Config of a mount made outside the API (nydusd's --bootstrap with
// --config).
func RedactConfig(config string) any {
	var v any
	if config == "" || json.Unmarshal([]byte(config), &v) != nil {
		return nil
	}
	var walk func(any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, c := range t {
				if secretKeys[k] {
					delete(t, k)
					continue
				}
				walk(c)
			}
		case []any:
			for _, c := range t {
				walk(c)
			}
		}
	}
	walk(v)
	return v
}
