package convert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
)

// Summary is what a conversion did (--output-json).
type Summary struct {
	Source       string         `json:"source"`
	Target       string         `json:"target"`
	TargetDigest string         `json:"target_digest"`
	MediaType    string         `json:"media_type"`
	Images       []ImageSummary `json:"images"`
	SourceBytes  int64          `json:"source_bytes"` // uncompressed tar bytes of every layer
	Seconds      float64        `json:"seconds"`
	// BuildCacheError says why the --build-cache image was not updated.
	BuildCacheError string `json:"build_cache_error,omitempty"`
}

// ImageSummary is one converted platform image.
type ImageSummary struct {
	Platform     string         `json:"platform,omitempty"`
	SourceDigest string         `json:"source_digest"`
	Digest       string         `json:"digest"`
	Bootstrap    string         `json:"bootstrap"`
	Layers       []LayerSummary `json:"layers"`
}

// LayerSummary is one converted layer.
type LayerSummary struct {
	Source       string `json:"source"`
	Blob         string `json:"blob"`
	BlobSize     int64  `json:"blob_size"`
	Uncompressed int64  `json:"uncompressed"`
	Cached       bool   `json:"cached"`      // found in the layer cache
	BuildCache   bool   `json:"build_cache"` // found in the --build-cache image
	Uploaded     bool   `json:"uploaded"`    // bytes sent (not already there, not mounted)
}

type converter struct {
	opts       *Options
	cache      *layerCache
	log        logrus.FieldLogger
	src        *source
	target     name.Reference
	targetRepo name.Repository
	pushOpts   []remote.Option
	prog       *progress
	cacheMu    sync.Mutex
	store      *blobStore  // nil: layer blobs go to the target repository
	dict       *chunkDict  // --chunk-dict, or nil
	bcache     *buildCache // --build-cache, or nil
	work       string      // temporary files of this run
}

func (c *converter) targetInsecure() bool { return c.opts.TargetInsecure || c.opts.PlainHTTP }

// Convert converts o.Source into a Nydus image at o.Target. The target tag
// is written last, only when every blob and manifest is in place.
func Convert(ctx context.Context, o Options) (*Summary, error) {
	start := time.Now()
	if err := o.normalize(); err != nil {
		return nil, err
	}
	target, err := name.ParseReference(o.Target, nameOptions(o.TargetInsecure || o.PlainHTTP)...)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", o.Target, err)
	}
	c := &converter{opts: &o, cache: &layerCache{dir: filepath.Join(o.CacheDir, "layers")},
		log: logrus.StandardLogger(), target: target,
		targetRepo: target.Context(), prog: newProgress(o.Progress)}
	c.pushOpts = append(o.remoteOptions(o.TargetInsecure), remote.WithContext(ctx))
	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	if c.work, err = os.MkdirTemp(o.CacheDir, ".run-"); err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	defer os.RemoveAll(c.work)
	if o.Backend != nil {
		if c.store, err = newBlobStore(o.Backend); err != nil {
			return nil, fmt.Errorf("--backend-type %s: %w", o.Backend.Type, err)
		}
	}
	if c.src, err = openSource(ctx, &o); err != nil {
		return nil, err
	}
	imgs, err := c.src.images(&o)
	if err != nil {
		return nil, err
	}
	if o.BuildCache != "" {
		var notes []string
		if c.bcache, notes, err = openBuildCache(ctx, &o); err != nil {
			return nil, err
		}
		for _, n := range notes {
			c.log.Info(n)
		}
	}
	if o.ChunkDict != "" {
		if c.dict, err = c.loadChunkDict(ctx); err != nil {
			return nil, err
		}
		if err := c.pushDictBlobs(ctx); err != nil {
			return nil, err
		}
	}
	sum := &Summary{Source: o.Source, Target: o.Target}
	var descs []v1.Descriptor
	var tops []rawManifest
	for _, pi := range imgs {
		is, desc, raw, err := c.convertImage(ctx, pi)
		if err != nil {
			return nil, err
		}
		sum.Images = append(sum.Images, *is)
		for _, l := range is.Layers {
			sum.SourceBytes += l.Uncompressed
		}
		descs = append(descs, desc)
		tops = append(tops, raw)
	}
	top := tops[0]
	if len(imgs) > 1 || o.MergePlatform {
		// Manifests by digest first; the index goes under the tag.
		for i, d := range descs {
			if err := remote.Put(c.targetRepo.Digest(d.Digest.String()), tops[i], c.pushOpts...); err != nil {
				return nil, fmt.Errorf("push manifest %s to %s: %w", d.Digest, c.targetRepo, err)
			}
		}
		if top, err = c.index(imgs, descs); err != nil {
			return nil, err
		}
	}
	if err := remote.Put(target, top, c.pushOpts...); err != nil {
		return nil, fmt.Errorf("push manifest to %s: %w", o.Target, err)
	}
	if c.bcache != nil {
		// The image is in place; a cache that cannot be written costs the
		// next conversion time, not this one its result.
		if err := c.bcache.export(); err != nil {
			c.log.Warnf("build cache %s not updated: %v", o.BuildCache, err)
			sum.BuildCacheError = err.Error()
		}
	}
	sum.TargetDigest = digestOf(top.b).String()
	sum.MediaType = string(top.mt)
	sum.Seconds = time.Since(start).Seconds()
	c.prog.printf("%s: %s\n", o.Target, sum.TargetDigest)
	return sum, nil
}

// ociOutput says whether the output uses OCI media types: when asked, or
// when the source does.
func (c *converter) ociOutput() bool { return c.opts.OCI || !c.src.isDocker }

// index makes the index naming the converted manifests (and, with
// --merge-platform, the source's first, copied into the target repository).
func (c *converter) index(imgs []platformImage, descs []v1.Descriptor) (rawManifest, error) {
	im := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	if !c.ociOutput() {
		im.MediaType = types.DockerManifestList
	}
	if c.opts.MergePlatform {
		for _, pi := range imgs {
			ref := c.targetRepo.Digest(pi.desc.Digest.String())
			if err := remote.Write(ref, pi.img, c.pushOpts...); err != nil {
				return rawManifest{}, fmt.Errorf("copy source manifest %s to %s: %w", pi.desc.Digest, c.targetRepo, err)
			}
			d := pi.desc
			d.Annotations = nil
			im.Manifests = append(im.Manifests, d)
		}
	}
	for i, d := range descs {
		if imgs[i].platform != nil {
			p := *imgs[i].platform
			d.Platform = &p
		}
		if c.opts.MergePlatform {
			d.ArtifactType = MediaTypeNydusManifest
			if d.Platform == nil {
				d.Platform = &v1.Platform{}
			}
			d.Platform.OSFeatures = append(append([]string(nil), d.Platform.OSFeatures...), PlatformFeatureNydus)
		}
		im.Manifests = append(im.Manifests, d)
	}
	b, err := json.Marshal(im)
	if err != nil {
		return rawManifest{}, err
	}
	return rawManifest{b: b, mt: im.MediaType}, nil
}

func digestOf(b []byte) v1.Hash {
	h, _, _ := v1.SHA256(bytesReader(b))
	return h
}

// convertImage converts one platform image and pushes everything but its
// manifest, which it returns.
func (c *converter) convertImage(ctx context.Context, pi platformImage) (*ImageSummary, v1.Descriptor, rawManifest, error) {
	fail := func(err error) (*ImageSummary, v1.Descriptor, rawManifest, error) {
		return nil, v1.Descriptor{}, rawManifest{}, err
	}
	is := &ImageSummary{SourceDigest: pi.desc.Digest.String()}
	if pi.platform != nil {
		is.Platform = pi.platform.String()
	}
	layers, err := pi.img.Layers()
	if err != nil {
		return fail(fmt.Errorf("source %s: %w", c.opts.Source, err))
	}
	results, err := c.convertLayers(ctx, layers)
	if err != nil {
		return fail(err)
	}
	var ml []builder.MergeLayer
	for _, r := range results {
		ml = append(ml, builder.MergeLayer{Bootstrap: filepath.Join(r.dir, cacheBoot), BlobID: r.info.Blob})
		is.Layers = append(is.Layers, LayerSummary{Source: r.info.Source, Blob: "sha256:" + r.info.Blob,
			BlobSize: r.info.BlobSize, Uncompressed: r.info.Uncompressed, Cached: r.cached,
			BuildCache: r.fromBuildCache, Uploaded: r.uploaded})
		if c.bcache != nil && !r.fromBuildCache {
			if err := c.addCacheRecord(r); err != nil {
				c.log.Warnf("build cache %s: layer %s not recorded: %v", c.opts.BuildCache, r.info.Source, err)
			}
		} else if c.bcache != nil {
			c.bcache.useKey(r.key)
		}
	}
	bl, err := c.bootstrapLayer(ctx, pi, ml, results)
	if err != nil {
		return fail(err)
	}
	if _, err := c.pushBlob(bl.blob, nil); err != nil {
		return fail(fmt.Errorf("push bootstrap layer %s to %s: %w", bl.blob.digest, c.targetRepo, err))
	}
	is.Bootstrap = bl.blob.digest.String()
	cfg, err := c.config(pi, results, bl)
	if err != nil {
		return fail(err)
	}
	if _, err := c.pushBlob(cfg, nil); err != nil {
		return fail(fmt.Errorf("push config %s to %s: %w", cfg.digest, c.targetRepo, err))
	}
	raw, err := c.manifest(pi, results, bl, cfg)
	if err != nil {
		return fail(err)
	}
	d := v1.Descriptor{MediaType: raw.mt, Size: int64(len(raw.b)), Digest: digestOf(raw.b)}
	is.Digest = d.Digest.String()
	return is, d, raw, nil
}

// convertLayers converts (or finds in the cache) and pushes every layer,
// several at a time; the first error cancels the rest.
func (c *converter) convertLayers(ctx context.Context, layers []v1.Layer) ([]*layerResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]*layerResult, len(layers))
	errs := make([]error, len(layers))
	sem := make(chan struct{}, c.opts.Jobs)
	var wg sync.WaitGroup
	// Slots are taken here, in order, so the largest layers start first.
	for _, i := range largestFirst(layers) {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			errs[i] = ctx.Err()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r, err := c.layer(ctx, i, len(layers), layers[i])
			if err != nil {
				errs[i] = err
				cancel()
				return
			}
			results[i] = r
		}()
	}
	wg.Wait()
	// Report the error that caused the others (not a cancellation).
	var first error
	for _, err := range errs {
		if err != nil && (first == nil || errors.Is(first, context.Canceled)) {
			first = err
		}
	}
	if first != nil {
		return nil, first
	}
	return results, nil
}

// largestFirst orders layer indexes by size, largest first: the largest
// layer is the conversion's critical path, so it starts at once and the
// small ones fill the cores beside it.
func largestFirst(layers []v1.Layer) []int {
	idx := make([]int, len(layers))
	size := make([]int64, len(layers))
	for i, l := range layers {
		idx[i] = i
		size[i], _ = l.Size() // unknown sizes (0) go last
	}
	sort.SliceStable(idx, func(a, b int) bool { return size[idx[a]] > size[idx[b]] })
	return idx
}

// layer converts and pushes one layer; errors name the layer and the
// reference.
func (c *converter) layer(ctx context.Context, i, n int, l v1.Layer) (*layerResult, error) {
	d, err := l.Digest()
	if err != nil {
		return nil, fmt.Errorf("layer %d of %s: %w", i+1, c.opts.Source, err)
	}
	ev := func(stage string, bytes int64) { c.prog.layer(i, n, d, stage, bytes) }
	r, err := c.convertLayer(ctx, l, c.src.fromTar, ev)
	if err != nil {
		return nil, fmt.Errorf("layer %d (%s) of %s: %w", i+1, d, c.opts.Source, err)
	}
	blob := &fileBlob{path: filepath.Join(r.dir, cacheBlob), digest: r.blobDigest(), size: r.info.BlobSize, mt: MediaTypeNydusBlob}
	if r.fromBuildCache {
		// Mounted from the cache repository in the same registry, else
		// copied from it.
		blob.open = r.remote.Compressed
		r.info.Pushed = append(r.info.Pushed, c.bcache.repo.Name())
	}
	if c.store != nil {
		if r.uploaded, err = c.store.put(ctx, blob); err != nil {
			return nil, fmt.Errorf("store blob of layer %d (%s) of %s in the %s backend: %w", i+1, d, c.opts.Source, c.opts.Backend.Type, err)
		}
	} else {
		if r.uploaded, err = c.pushBlob(blob, r.info.Pushed); err != nil {
			return nil, fmt.Errorf("push blob of layer %d (%s) of %s to %s: %w", i+1, d, c.opts.Source, c.targetRepo, err)
		}
		c.recordPushed(r)
	}
	up := r.uploaded
	if up {
		ev("pushed", r.info.BlobSize)
	} else {
		ev("present", r.info.BlobSize)
	}
	return r, nil
}
