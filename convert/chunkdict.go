package convert

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// chunkDictRegistryPrefix marks a chunk dictionary that is a Nydus image
// in a registry (nydusify's --chunk-dict bootstrap:registry:REF).
const chunkDictRegistryPrefix = "bootstrap:registry:"

// chunkDict is a resolved --chunk-dict: its bootstrap on disk and the
// blobs it lists, as the layers the converted manifests must hold so that
// the daemon finds them in the target repository.
type chunkDict struct {
	boot   string
	digest string           // sha256 hex of the bootstrap (in the layer cache key)
	blobs  []v1.Descriptor  // in blob-table order
	from   *name.Repository // the dictionary's repository (nil: a local bootstrap)
}

// loadChunkDict resolves o.ChunkDict: a Nydus image in a registry (its
// bootstrap layer is read; its blob layers are mounted or copied into the
// target repository) or a local bootstrap file whose blobs must already be
// in the target repository (or the storage backend).
func (c *converter) loadChunkDict(ctx context.Context) (*chunkDict, error) {
	spec := c.opts.ChunkDict
	d := &chunkDict{}
	var layers map[string]v1.Descriptor
	if ref, ok := strings.CutPrefix(spec, chunkDictRegistryPrefix); ok {
		r, err := name.ParseReference(ref, nameOptions(c.targetInsecure() || c.opts.SourceInsecure)...)
		if err != nil {
			return nil, fmt.Errorf("--chunk-dict %s: %w", ref, err)
		}
		img, err := remote.Image(r, c.pushOpts...)
		if err != nil {
			return nil, fmt.Errorf("--chunk-dict %s: %w", ref, err)
		}
		m, err := img.Manifest()
		if err != nil || len(m.Layers) == 0 {
			return nil, fmt.Errorf("--chunk-dict %s: not a Nydus image (manifest: %v)", ref, err)
		}
		last := m.Layers[len(m.Layers)-1]
		if last.Annotations[AnnotationNydusBootstrap] != "true" {
			return nil, fmt.Errorf("--chunk-dict %s: the last layer is not a Nydus bootstrap layer", ref)
		}
		l, err := img.LayerByDigest(last.Digest)
		if err != nil {
			return nil, fmt.Errorf("--chunk-dict %s: %w", ref, err)
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, fmt.Errorf("--chunk-dict %s: bootstrap layer: %w", ref, err)
		}
		bl, err := ReadBootstrapLayer(rc, 1<<30)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("--chunk-dict %s: bootstrap layer: %w", ref, err)
		}
		d.boot = filepath.Join(c.work, "chunk-dict.boot")
		if err := os.WriteFile(d.boot, bl.Bootstrap, 0o644); err != nil {
			return nil, err
		}
		repo := r.Context()
		d.from = &repo
		layers = map[string]v1.Descriptor{}
		for _, l := range m.Layers[:len(m.Layers)-1] {
			layers[l.Digest.Hex] = l
		}
	} else {
		d.boot = spec
	}
	b, err := os.ReadFile(d.boot)
	if err != nil {
		return nil, fmt.Errorf("--chunk-dict: %w", err)
	}
	sum := sha256.Sum256(b)
	d.digest = hex.EncodeToString(sum[:])
	img, err := rafs.Open(d.boot, rafs.Options{ChunkCacheSize: -1})
	if err != nil {
		return nil, fmt.Errorf("--chunk-dict %s: %w", spec, err)
	}
	ids := img.BlobIDs()
	img.Close()
	for _, id := range ids {
		desc, ok := layers[id]
		switch {
		case layers != nil && !ok:
			return nil, fmt.Errorf("--chunk-dict %s: blob %s of its bootstrap is not a layer of its manifest", spec, id)
		case layers == nil && c.store == nil:
			// A local dictionary: its blobs must be in the target repository.
			l, err := remote.Layer(c.targetRepo.Digest("sha256:"+id), c.pushOpts...)
			var size int64
			if err == nil {
				size, err = l.Size() // HEAD on the blob
			}
			if err != nil {
				return nil, fmt.Errorf("--chunk-dict %s: blob %s is not in %s: %w", spec, id, c.targetRepo, err)
			}
			desc = v1.Descriptor{Digest: v1.Hash{Algorithm: "sha256", Hex: id}, Size: size}
		case layers == nil:
			desc = v1.Descriptor{Digest: v1.Hash{Algorithm: "sha256", Hex: id}}
		}
		d.blobs = append(d.blobs, v1.Descriptor{MediaType: MediaTypeNydusBlob, Size: desc.Size, Digest: desc.Digest,
			Annotations: map[string]string{AnnotationNydusBlob: "true"}})
	}
	return d, nil
}

// pushDictBlobs makes the dictionary's blobs layers of the target
// repository: mounted from the dictionary's repository (or copied when it
// is in another registry). With a storage backend they are expected there
// already.
func (c *converter) pushDictBlobs(ctx context.Context) error {
	d := c.dict
	if d == nil || d.from == nil || c.store != nil {
		return nil
	}
	for _, b := range d.blobs {
		l, err := remote.Layer(d.from.Digest(b.Digest.String()), c.pushOpts...)
		if err != nil {
			return fmt.Errorf("chunk dict blob %s: %w", b.Digest, err)
		}
		if err := remote.WriteLayer(c.targetRepo, l, c.pushOpts...); err != nil {
			return fmt.Errorf("chunk dict blob %s into %s: %w", b.Digest, c.targetRepo, err)
		}
	}
	return nil
}
