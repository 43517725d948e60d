package convert

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
)

// Files of a cache entry.
const (
	cacheBlob     = "blob"
	cacheBoot     = "boot"
	cacheBlobMeta = "blob.meta"
	cacheInfo     = "info.json"
)

// layerInfo is what the cache records about a converted layer.
type layerInfo struct {
	Source       string   `json:"source"`           // source layer digest
	Blob         string   `json:"blob"`             // sha256 of the blob (the blob layer digest)
	BlobSize     int64    `json:"blob_size"`        // bytes
	Uncompressed int64    `json:"uncompressed"`     // tar bytes read
	Pushed       []string `json:"pushed,omitempty"` // repositories the blob was pushed to
}

// layerResult is one converted layer.
type layerResult struct {
	info     layerInfo
	dir      string // cache entry
	key      string // cache key (source digest and build settings)
	cached   bool
	uploaded bool
	// fromBuildCache: restored from the --build-cache image, whose
	// repository holds the blob (remote); dir has no blob file.
	fromBuildCache bool
	remote         v1.Layer
}

func (r *layerResult) blobDigest() v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: r.info.Blob}
}

// layerCache holds converted layers under dir, one directory per source
// layer digest and build settings.
type layerCache struct {
	dir string
}

func (c *layerCache) key(src v1.Hash, o *Options, dict *chunkDict) string {
	k := fmt.Appendf(nil, "nydus-layer v2|%s|fs=%d|compressor=%s|chunk=%#x|digester=%s",
		src, o.FsVersion, o.Compressor, o.ChunkSize, builder.DigestBlake3)
	if dict != nil {
		k = fmt.Appendf(k, "|chunk-dict=%s", dict.digest)
	}
	h := sha256.Sum256(k)
	return hex.EncodeToString(h[:])
}

// lookup returns the entry for key, or nil.
func (c *layerCache) lookup(key string) *layerResult {
	dir := filepath.Join(c.dir, key)
	b, err := os.ReadFile(filepath.Join(dir, cacheInfo))
	if err != nil {
		return nil
	}
	var info layerInfo
	if json.Unmarshal(b, &info) != nil || info.Blob == "" {
		return nil
	}
	if st, err := os.Stat(filepath.Join(dir, cacheBlob)); err != nil || st.Size() != info.BlobSize {
		return nil
	}
	return &layerResult{info: info, dir: dir, cached: true}
}

// writeInfo stores an entry's info atomically.
func writeInfo(dir string, info *layerInfo) error {
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, cacheInfo+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, cacheInfo))
}

// supportedLayer says whether a source layer's media type is a tar layer
// this converter reads.
func supportedLayer(mt types.MediaType) bool {
	switch mt {
	case types.DockerLayer, types.DockerUncompressedLayer, types.OCILayer, types.OCIUncompressedLayer, types.OCILayerZStd:
		return true
	}
	return false
}

// layerStream is a source layer's tar stream, checked against its digest.
type layerStream struct {
	raw     io.ReadCloser
	counted *countingReader // compressed (or, from an archive, tar) bytes
	tar     io.Reader
	tarN    *countingReader
	dec     io.Closer
	hash    hash.Hash
	want    v1.Hash
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// openLayer opens a layer's bytes: compressed ones hashed against the layer
// digest (archive layers, stored as tars, against their diff_id), then
// decompressed by what the stream starts with.
func openLayer(l v1.Layer, fromArchive bool) (*layerStream, error) {
	s := &layerStream{hash: sha256.New()}
	var err error
	if fromArchive {
		if s.want, err = l.DiffID(); err == nil {
			s.raw, err = l.Uncompressed()
		}
	} else {
		if s.want, err = l.Digest(); err == nil {
			s.raw, err = l.Compressed()
		}
	}
	if err != nil {
		return nil, err
	}
	s.counted = &countingReader{r: io.TeeReader(s.raw, s.hash)}
	br := bufio.NewReaderSize(s.counted, 1<<20)
	magic, _ := br.Peek(4)
	var tr io.Reader = br
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			s.raw.Close()
			return nil, fmt.Errorf("gzip: %w", err)
		}
		tr, s.dec = zr, zr
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			s.raw.Close()
			return nil, fmt.Errorf("zstd: %w", err)
		}
		tr, s.dec = zr, zr.IOReadCloser()
	}
	s.tarN = &countingReader{r: tr}
	s.tar = s.tarN
	return s, nil
}

// finish reads what the builder left (the tar's padding, the compressed
// stream's trailer) and checks the digest.
func (s *layerStream) finish() error {
	defer s.close()
	if _, err := io.Copy(io.Discard, s.tar); err != nil {
		return fmt.Errorf("decompress: %w", err)
	}
	if _, err := io.Copy(io.Discard, s.counted); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	got := hex.EncodeToString(s.hash.Sum(nil))
	if s.want.Algorithm != "sha256" || got != s.want.Hex {
		return fmt.Errorf("content digest is sha256:%s, not %s as the manifest says", got, s.want)
	}
	return nil
}

func (s *layerStream) close() {
	if s.dec != nil {
		s.dec.Close()
	}
	s.raw.Close()
}

// convertLayer converts one source layer into a cache entry, or finds it
// there.
func (c *converter) convertLayer(ctx context.Context, l v1.Layer, fromArchive bool, ev func(stage string, n int64)) (*layerResult, error) {
	src, err := l.Digest()
	if err != nil {
		return nil, err
	}
	mt, err := l.MediaType()
	if err != nil {
		return nil, err
	}
	if !supportedLayer(mt) {
		return nil, fmt.Errorf("unsupported layer media type %s", mt)
	}
	key := c.cache.key(src, c.opts, c.dict)
	if r := c.cache.lookup(key); r != nil {
		ev("cached", r.info.Uncompressed)
		r.key = key
		return r, nil
	}
	if c.bcache != nil {
		r, err := c.bcache.lookup(key, filepath.Join(c.work, "build-cache-"+key))
		if err != nil {
			return nil, err
		}
		if r != nil {
			ev("build cache", r.info.Uncompressed)
			r.key = key
			return r, nil
		}
	}
	if err := os.MkdirAll(c.cache.dir, 0o755); err != nil {
		return nil, fmt.Errorf("layer cache: %w", err)
	}
	tmp, err := os.MkdirTemp(c.cache.dir, ".tmp-"+key[:12]+"-")
	if err != nil {
		return nil, fmt.Errorf("layer cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	s, err := openLayer(l, fromArchive)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	ev("pulling", 0)
	res, err := builder.Build(ctx, "layer "+src.String(), filepath.Join(tmp, cacheBoot), tmp, builder.Options{
		FsVersion: c.opts.FsVersion, Compressor: c.opts.Compressor, ChunkSize: c.opts.ChunkSize,
		Type: builder.TarRafs, Reader: s.tar, WhiteoutSpec: builder.WhiteoutNone,
		BlobInlineMeta: c.opts.FsVersion == 6, EmptyBlob: true, BlobPath: filepath.Join(tmp, cacheBlob),
		ChunkDict: c.dictBoot(), Log: c.log,
	})
	if err != nil {
		s.close()
		if derr := ctx.Err(); derr != nil {
			return nil, derr
		}
		return nil, err
	}
	if err := s.finish(); err != nil {
		return nil, err
	}
	ev("pulled", s.tarN.n.Load())
	info := layerInfo{Source: src.String(), Uncompressed: s.tarN.n.Load()}
	if res.BlobSHA256 == "" {
		return nil, errors.New("the builder wrote no blob")
	}
	info.Blob, info.BlobSize = res.BlobSHA256, res.Stats.BlobSize
	if c.opts.FsVersion == 6 && len(res.BlobIDs) == 1 {
		if err := writeBlobMeta(filepath.Join(tmp, cacheBoot), res.BlobPath, filepath.Join(tmp, cacheBlobMeta)); err != nil {
			return nil, err
		}
	}
	if err := writeInfo(tmp, &info); err != nil {
		return nil, fmt.Errorf("layer cache: %w", err)
	}
	dir := filepath.Join(c.cache.dir, key)
	if err := os.Rename(tmp, dir); err != nil {
		if r := c.cache.lookup(key); r != nil { // converted meanwhile by another process
			r.key = key
			return r, nil
		}
		return nil, fmt.Errorf("layer cache: %w", err)
	}
	ev("converted", info.Uncompressed)
	return &layerResult{info: info, dir: dir, key: key}, nil
}

// dictBoot is the chunk dictionary's bootstrap, or "".
func (c *converter) dictBoot() string {
	if c.dict == nil {
		return ""
	}
	return c.dict.boot
}

// writeBlobMeta writes the layer's blob.meta file as the snapshotter reads
// it: the chunk-info array padded to 4 KiB, then the 4 KiB header, both
// copied from the blob (they follow each other there).
func writeBlobMeta(boot, blob, out string) error {
	img, err := rafs.Open(boot, rafs.Options{ChunkCacheSize: -1})
	if err != nil {
		return fmt.Errorf("layer bootstrap: %w", err)
	}
	blobs := img.Blobs()
	img.Close()
	if len(blobs) != 1 {
		return fmt.Errorf("layer bootstrap lists %d blobs, want 1", len(blobs))
	}
	b := blobs[0]
	if b.CICompressedSize != b.CIUncompressedSize {
		return errors.New("layer blob has a compressed chunk-info array")
	}
	f, err := os.Open(blob)
	if err != nil {
		return err
	}
	defer f.Close()
	ci := make([]byte, (b.CICompressedSize+4095)/4096*4096+4096)
	if _, err := f.ReadAt(ci[:b.CICompressedSize], int64(b.CIOffset)); err != nil {
		return fmt.Errorf("read blob.meta: %w", err)
	}
	if _, err := f.ReadAt(ci[len(ci)-4096:], int64(b.CIOffset+b.CICompressedSize)); err != nil {
		return fmt.Errorf("read blob.meta header: %w", err)
	}
	return os.WriteFile(out, ci, 0o644)
}
