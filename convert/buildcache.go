package convert

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// Annotations of a build cache image (--build-cache).
const (
	// AnnotationBuildCache on the cache manifest is its version
	// (--build-cache-version); a cache of another version is ignored.
	AnnotationBuildCache = "containerd.io/snapshot/nydus-cache"
	// AnnotationCacheKey on each record layer is the sha256 of the source
	// layer digest and every build setting (RAFS version, compressor, chunk
	// size, digester, chunk dictionary): a record is used only by a
	// conversion with the same key.
	AnnotationCacheKey = "io.nydus-virtiofsd.build-cache.key"
	// AnnotationCacheUncompressed on a record's bootstrap layer is the
	// source layer's uncompressed tar size (for the summary).
	AnnotationCacheUncompressed = "io.nydus-virtiofsd.build-cache.source-uncompressed"
	// AnnotationCacheBlob on a record's bootstrap layer is its blob's digest.
	AnnotationCacheBlob = "io.nydus-virtiofsd.build-cache.blob"
	// annotationUncompressed is the bootstrap record's diff_id.
	annotationUncompressed = "containerd.io/uncompressed"

	// DefaultBuildCacheVersion and DefaultBuildCacheMaxRecords are the
	// defaults of --build-cache-version and --build-cache-max-records.
	DefaultBuildCacheVersion    = "v1"
	DefaultBuildCacheMaxRecords = 200
)

// cacheRecord is one converted layer in the cache image: its bootstrap
// layer (gzip tar of the layer bootstrap and blob.meta) and its blob layer.
type cacheRecord struct {
	key, source  string
	uncompressed int64
	boot         v1.Descriptor
	bootDiffID   v1.Hash
	blob         v1.Descriptor
}

// buildCache is the cache image: records read at the start, reused and new
// ones written back at the end, newest last.
type buildCache struct {
	ref     name.Reference
	repo    name.Repository
	opts    []remote.Option
	version string
	max     int

	mu      sync.Mutex
	records []*cacheRecord // oldest first
	byKey   map[string]*cacheRecord
	used    []*cacheRecord // in use by this conversion, in layer order
}

// openBuildCache reads the cache image at o.BuildCache; a missing image,
// or one of another version, gives an empty cache.
func openBuildCache(ctx context.Context, o *Options) (*buildCache, []string, error) {
	insecure := o.BuildCacheInsecure || o.PlainHTTP
	ref, err := name.ParseReference(o.BuildCache, nameOptions(insecure)...)
	if err != nil {
		return nil, nil, fmt.Errorf("--build-cache %s: %w", o.BuildCache, err)
	}
	bc := &buildCache{ref: ref, repo: ref.Context(), version: o.BuildCacheVersion, max: o.BuildCacheMaxRecords,
		opts: append(o.remoteOptions(insecure), remote.WithContext(ctx)), byKey: map[string]*cacheRecord{}}
	desc, err := remote.Get(ref, bc.opts...)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
			return bc, []string{fmt.Sprintf("build cache %s: none yet", o.BuildCache)}, nil
		}
		return nil, nil, fmt.Errorf("--build-cache %s: %w", o.BuildCache, err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		return nil, nil, fmt.Errorf("--build-cache %s: manifest: %w", o.BuildCache, err)
	}
	if v := m.Annotations[AnnotationBuildCache]; v != bc.version {
		return bc, []string{fmt.Sprintf("build cache %s: version %q, not %q: ignored", o.BuildCache, v, bc.version)}, nil
	}
	bc.records = parseRecords(m.Layers)
	for _, r := range bc.records {
		bc.byKey[r.key] = r
	}
	return bc, nil, nil
}

// parseRecords pairs the bootstrap and blob layers of a cache manifest by
// key; anything incomplete or malformed is left out.
func parseRecords(layers []v1.Descriptor) []*cacheRecord {
	blobs := map[string]v1.Descriptor{}
	for _, l := range layers {
		if l.MediaType == MediaTypeNydusBlob && l.Annotations[AnnotationCacheKey] != "" {
			blobs[l.Annotations[AnnotationCacheKey]] = l
		}
	}
	var out []*cacheRecord
	seen := map[string]bool{}
	for _, l := range layers {
		a := l.Annotations
		key := a[AnnotationCacheKey]
		if a[AnnotationNydusBootstrap] != "true" || key == "" || seen[key] {
			continue
		}
		blob, ok := blobs[key]
		diffID, err := v1.NewHash(a[annotationUncompressed])
		n, err2 := strconv.ParseInt(a[AnnotationCacheUncompressed], 10, 64)
		if !ok || err != nil || err2 != nil || a[AnnotationCacheBlob] != blob.Digest.String() || blob.Digest.Algorithm != "sha256" {
			continue
		}
		seen[key] = true
		out = append(out, &cacheRecord{key: key, source: a[AnnotationSourceDigest], uncompressed: n,
			boot: l, bootDiffID: diffID, blob: blob})
	}
	return out
}

// lookup restores the record for key into dir (layer bootstrap and
// blob.meta) and returns the layer, its blob left in the cache repository;
// nil when there is no record or its blob is gone from the registry.
func (bc *buildCache) lookup(key, dir string) (*layerResult, error) {
	bc.mu.Lock()
	rec := bc.byKey[key]
	bc.mu.Unlock()
	if rec == nil {
		return nil, nil
	}
	blob, err := remote.Layer(bc.repo.Digest(rec.blob.Digest.String()), bc.opts...)
	if err != nil {
		return nil, err
	}
	if n, err := blob.Size(); err != nil || n != rec.blob.Size {
		// Gone (or replaced): convert again, and record it anew.
		bc.drop(rec)
		return nil, nil
	}
	boot, err := remote.Layer(bc.repo.Digest(rec.boot.Digest.String()), bc.opts...)
	if err != nil {
		return nil, err
	}
	rc, err := boot.Compressed() // verified against the digest as it is read
	if err != nil {
		bc.drop(rec)
		return nil, nil
	}
	defer rc.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := extractRecord(rc, dir); err != nil {
		bc.drop(rec)
		return nil, fmt.Errorf("build cache %s: record %s: %w", bc.ref, rec.boot.Digest, err)
	}
	info := layerInfo{Source: rec.source, Blob: rec.blob.Digest.Hex, BlobSize: rec.blob.Size, Uncompressed: rec.uncompressed}
	return &layerResult{info: info, dir: dir, fromBuildCache: true, remote: blob}, nil
}

// maxRecordFile bounds a file of a record bootstrap (a layer bootstrap of
// millions of entries stays far below it).
const maxRecordFile = 1 << 30

// extractRecord writes a record's boot and blob.meta files into dir; the
// tar comes from the registry, so nothing else is accepted.
func extractRecord(r io.Reader, dir string) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return err
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg || (h.Name != cacheBoot && h.Name != cacheBlobMeta) {
			return fmt.Errorf("unexpected entry %q", h.Name)
		}
		if h.Size > maxRecordFile {
			return fmt.Errorf("%s: %d bytes, more than %d", h.Name, h.Size, int64(maxRecordFile))
		}
		found = found || h.Name == cacheBoot
		f, err := os.Create(filepath.Join(dir, h.Name))
		if err != nil {
			return err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return err
	}
	if !found {
		return errors.New("no layer bootstrap")
	}
	return nil
}

// drop forgets a record that cannot be used.
func (bc *buildCache) drop(rec *cacheRecord) {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if bc.byKey[rec.key] == rec {
		delete(bc.byKey, rec.key)
	}
	for i, r := range bc.records {
		if r == rec {
			bc.records = append(bc.records[:i:i], bc.records[i+1:]...)
			break
		}
	}
}

// useKey marks the record of key as used by this conversion.
func (bc *buildCache) useKey(key string) {
	bc.mu.Lock()
	rec := bc.byKey[key]
	bc.mu.Unlock()
	if rec != nil {
		bc.use(rec)
	}
}

// use marks a record as used by this conversion (the newest so far).
func (bc *buildCache) use(rec *cacheRecord) {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	for _, u := range bc.used {
		if u == rec {
			return
		}
	}
	bc.used = append(bc.used, rec)
}

// addCacheRecord makes a record of a layer this conversion converted (or found in
// the local cache): its blob is put in the cache repository (mounted from
// the target repository when both are in one registry) with its bootstrap.
func (c *converter) addCacheRecord(r *layerResult) error {
	bc := c.bcache
	key := r.key
	bc.mu.Lock()
	rec := bc.byKey[key]
	bc.mu.Unlock()
	if rec != nil {
		bc.use(rec)
		return nil
	}
	blob := &fileBlob{path: filepath.Join(r.dir, cacheBlob), digest: r.blobDigest(), size: r.info.BlobSize, mt: MediaTypeNydusBlob}
	if err := pushTo(bc.repo, blob, []string{c.targetRepo.Name()}, bc.opts); err != nil {
		return fmt.Errorf("blob %s: %w", blob.digest, err)
	}
	files := []tarFile{{name: cacheBoot, path: filepath.Join(r.dir, cacheBoot)}}
	if _, err := os.Stat(filepath.Join(r.dir, cacheBlobMeta)); err == nil {
		files = append(files, tarFile{name: cacheBlobMeta, path: filepath.Join(r.dir, cacheBlobMeta)})
	}
	out, err := os.CreateTemp(c.work, "record-")
	if err != nil {
		return err
	}
	out.Close()
	diffID, digest, size, err := writeTarGz(out.Name(), files)
	if err != nil {
		return err
	}
	boot := &fileBlob{path: out.Name(), digest: digest, size: size, mt: types.OCILayer}
	if err := pushTo(bc.repo, boot, nil, bc.opts); err != nil {
		return fmt.Errorf("bootstrap of %s: %w", r.info.Source, err)
	}
	rec = &cacheRecord{key: key, source: r.info.Source, uncompressed: r.info.Uncompressed, bootDiffID: diffID,
		boot: v1.Descriptor{MediaType: types.OCILayer, Size: size, Digest: digest},
		blob: v1.Descriptor{MediaType: MediaTypeNydusBlob, Size: blob.size, Digest: blob.digest}}
	bc.mu.Lock()
	bc.byKey[key] = rec
	bc.mu.Unlock()
	bc.use(rec)
	return nil
}

// export writes the cache image: the records not used by this conversion
// (oldest first), then the used ones, the oldest dropped beyond max.
func (bc *buildCache) export() error {
	used := map[*cacheRecord]bool{}
	for _, r := range bc.used {
		used[r] = true
	}
	var all []*cacheRecord
	for _, r := range bc.records {
		if !used[r] {
			all = append(all, r)
		}
	}
	all = append(all, bc.used...)
	if bc.max > 0 && len(all) > bc.max {
		all = all[len(all)-bc.max:]
	}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Annotations: map[string]string{AnnotationBuildCache: bc.version}}
	var diffIDs []string
	for _, r := range all {
		boot := r.boot
		boot.Annotations = map[string]string{AnnotationNydusBootstrap: "true", AnnotationCacheKey: r.key,
			AnnotationSourceDigest: r.source, annotationUncompressed: r.bootDiffID.String(),
			AnnotationCacheUncompressed: strconv.FormatInt(r.uncompressed, 10), AnnotationCacheBlob: r.blob.Digest.String()}
		blob := r.blob
		blob.Annotations = map[string]string{AnnotationNydusBlob: "true", AnnotationCacheKey: r.key, AnnotationSourceDigest: r.source}
		m.Layers = append(m.Layers, boot, blob)
		diffIDs = append(diffIDs, r.bootDiffID.String(), r.blob.Digest.String())
	}
	cfg, err := json.Marshal(map[string]any{"architecture": "unknown", "os": "unknown",
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}})
	if err != nil {
		return err
	}
	cb := rawBlob(cfg, types.OCIConfigJSON)
	if err := remote.WriteLayer(bc.repo, cb, bc.opts...); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	m.Config = v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(cfg)), Digest: cb.digest}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return remote.Put(bc.ref, rawManifest{b: b, mt: m.MediaType}, bc.opts...)
}

// rawBlob is bytes pushed as a blob.
func rawBlob(b []byte, mt types.MediaType) *fileBlob {
	return &fileBlob{digest: digestOf(b), size: int64(len(b)), mt: mt,
		open: func() (io.ReadCloser, error) { return io.NopCloser(bytesReader(b)), nil }}
}
