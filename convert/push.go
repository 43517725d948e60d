package convert

import (
	"io"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// fileBlob is a blob in a local file, pushed as a layer whose compressed
// and uncompressed forms are the same bytes. opened says whether the pusher
// read it (it does not when the registry already has the blob or mounts it
// from another repository).
type fileBlob struct {
	path   string
	digest v1.Hash
	size   int64
	mt     types.MediaType
	opened atomic.Bool
	// open, when set, gives the bytes instead of the file (a blob held by
	// the build cache image, or bytes in memory).
	open func() (io.ReadCloser, error)
}

func (f *fileBlob) Digest() (v1.Hash, error)             { return f.digest, nil }
func (f *fileBlob) DiffID() (v1.Hash, error)             { return f.digest, nil }
func (f *fileBlob) Size() (int64, error)                 { return f.size, nil }
func (f *fileBlob) MediaType() (types.MediaType, error)  { return f.mt, nil }
func (f *fileBlob) Uncompressed() (io.ReadCloser, error) { return f.Compressed() }
func (f *fileBlob) Compressed() (io.ReadCloser, error) {
	f.opened.Store(true)
	if f.open != nil {
		return f.open()
	}
	return os.Open(f.path)
}

var _ v1.Layer = (*fileBlob)(nil)

// rawManifest is a manifest or index pushed as the bytes it is.
type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.b, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// pushBlob uploads a blob to the target repository unless it is there
// (the pusher asks with HEAD first), mounting it from mountFrom (a
// repository of the same registry that has it) when given. It reports
// whether bytes were uploaded.
func (c *converter) pushBlob(f *fileBlob, mountFrom []string) (uploaded bool, err error) {
	if err := pushTo(c.targetRepo, f, mountFrom, c.pushOpts); err != nil {
		return false, err
	}
	return f.opened.Load(), nil
}

// pushTo uploads a blob to repo unless it is there, mounting it from the
// first of mountFrom in the same registry.
func pushTo(repo name.Repository, f *fileBlob, mountFrom []string, opts []remote.Option) error {
	var l v1.Layer = f
	for _, from := range mountFrom {
		src, err := name.NewRepository(from, name.WithDefaultRegistry(repo.RegistryStr()))
		if err != nil || src.RegistryStr() != repo.RegistryStr() || src.RepositoryStr() == repo.RepositoryStr() {
			continue
		}
		l = &remote.MountableLayer{Layer: f, Reference: src.Digest(f.digest.String())}
		break
	}
	return remote.WriteLayer(repo, l, opts...)
}

// recordPushed notes in a cache entry that its blob is in the target
// repository, for cross-repository mounts by later conversions.
func (c *converter) recordPushed(r *layerResult) {
	repo := c.targetRepo.Name()
	for _, p := range r.info.Pushed {
		if p == repo {
			return
		}
	}
	c.cacheMu.Lock()
	defer c.cacheMu.Unlock()
	r.info.Pushed = append(r.info.Pushed, repo)
	if err := writeInfo(r.dir, &r.info); err != nil {
		c.log.Warnf("layer cache %s: %v", filepath.Base(r.dir), err)
	}
}
