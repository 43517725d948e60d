package convert

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// bootLayer is an image's bootstrap layer, written to a file.
type bootLayer struct {
	blob   *fileBlob
	diffID v1.Hash // sha256 of the uncompressed tar
}

// bootstrapLayer merges the layers' bootstraps and writes the bootstrap
// layer: gzip(tar) of image/, image/image.boot and for v6 one
// image/<blob digest hex>.blob.meta per layer.
func (c *converter) bootstrapLayer(ctx context.Context, pi platformImage, ml []builder.MergeLayer, results []*layerResult) (*bootLayer, error) {
	dir, err := os.MkdirTemp(c.work, "image-")
	if err != nil {
		return nil, err
	}
	boot := filepath.Join(dir, "image.boot")
	if _, err := builder.Merge(ctx, ml, boot, builder.Options{FsVersion: c.opts.FsVersion, Compressor: c.opts.Compressor,
		ChunkSize: c.opts.ChunkSize, PrefetchFiles: c.opts.PrefetchFiles, ChunkDict: c.dictBoot(), Log: c.log}); err != nil {
		return nil, fmt.Errorf("merge the layers of %s (%s): %w", c.opts.Source, pi.desc.Digest, err)
	}
	files := []tarFile{{name: "image/", dir: true}, {name: BootstrapPath, path: boot}}
	if c.opts.FsVersion == 6 {
		for _, r := range results {
			meta := filepath.Join(r.dir, cacheBlobMeta)
			if _, err := os.Stat(meta); err != nil {
				continue // a layer without file data: its blob is not in the blob table
			}
			files = append(files, tarFile{name: "image/" + r.info.Blob + ".blob.meta", path: meta})
		}
	}
	out := filepath.Join(dir, "bootstrap.tar.gz")
	diffID, digest, size, err := writeTarGz(out, files)
	if err != nil {
		return nil, fmt.Errorf("bootstrap layer: %w", err)
	}
	mt := types.OCILayer
	if !c.ociOutput() {
		mt = types.DockerLayer
	}
	return &bootLayer{blob: &fileBlob{path: out, digest: digest, size: size, mt: mt}, diffID: diffID}, nil
}

type tarFile struct {
	name string
	dir  bool
	path string
}

// writeTarGz writes files as a reproducible gzip(tar) and returns the
// sha256 of the tar, the sha256 and size of the gzip.
func writeTarGz(out string, files []tarFile) (diffID, digest v1.Hash, size int64, err error) {
	f, err := os.Create(out)
	if err != nil {
		return
	}
	defer f.Close()
	zh := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(f, zh)}
	zw, err := gzip.NewWriterLevel(cw, gzip.DefaultCompression)
	if err != nil {
		return
	}
	th := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(zw, th))
	epoch := time.Unix(0, 0)
	for _, tf := range files {
		if tf.dir {
			err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: tf.name, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX})
		} else {
			err = copyIntoTar(tw, tf.name, tf.path, epoch)
		}
		if err != nil {
			return
		}
	}
	if err = tw.Close(); err != nil {
		return
	}
	if err = zw.Close(); err != nil {
		return
	}
	if err = f.Close(); err != nil {
		return
	}
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(th.Sum(nil))},
		v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(zh.Sum(nil))}, cw.n, nil
}

func copyIntoTar(tw *tar.Writer, name, path string, mtime time.Time) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o444, Size: st.Size(), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err = io.Copy(tw, src)
	return err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// config is the source's config with rootfs and history for the Nydus
// layers; everything else (config.config above all) is kept as it was.
func (c *converter) config(pi platformImage, results []*layerResult, bl *bootLayer) (*fileBlob, error) {
	raw, err := pi.img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("source %s: config: %w", c.opts.Source, err)
	}
	b, err := nydusConfig(raw, c.blobLayers(results), bl.diffID)
	if err != nil {
		return nil, fmt.Errorf("source %s: config: %w", c.opts.Source, err)
	}
	p := filepath.Join(filepath.Dir(bl.blob.path), "config.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		return nil, err
	}
	mt := types.OCIConfigJSON
	if c.opts.MergePlatform {
		mt = MediaTypeNydusConfig
	} else if !c.ociOutput() {
		mt = types.DockerConfigJSON
	}
	return &fileBlob{path: p, digest: digestOf(b), size: int64(len(b)), mt: mt}, nil
}

// blobLayers are the blob layers of a manifest: the chunk dictionary's
// blobs, then one per source layer; none when the blobs are in a storage
// backend.
func (c *converter) blobLayers(results []*layerResult) []v1.Descriptor {
	if c.store != nil {
		return nil
	}
	var out []v1.Descriptor
	if c.dict != nil {
		out = append(out, c.dict.blobs...)
	}
	for _, r := range results {
		out = append(out, v1.Descriptor{MediaType: MediaTypeNydusBlob, Size: r.info.BlobSize,
			Digest: r.blobDigest(), Annotations: map[string]string{AnnotationNydusBlob: "true"}})
	}
	return out
}

// nydusConfig rewrites a raw image config: diff_ids are the blob digests
// then the bootstrap tar's digest; history gains the bootstrap layer.
func nydusConfig(raw []byte, blobs []v1.Descriptor, bootDiffID v1.Hash) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	diffIDs := make([]string, 0, len(blobs)+1)
	for _, b := range blobs {
		diffIDs = append(diffIDs, b.Digest.String())
	}
	diffIDs = append(diffIDs, bootDiffID.String())
	rootfs, err := json.Marshal(map[string]any{"type": "layers", "diff_ids": diffIDs})
	if err != nil {
		return nil, err
	}
	m["rootfs"] = rootfs
	var history []json.RawMessage
	if h, ok := m["history"]; ok && string(h) != "null" {
		if err := json.Unmarshal(h, &history); err != nil {
			return nil, fmt.Errorf("history: %w", err)
		}
	}
	entry, _ := json.Marshal(map[string]string{"created_by": "nydus-virtiofsd convert", "comment": "Nydus Bootstrap Layer"})
	history = append(history, entry)
	if m["history"], err = json.Marshal(history); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// manifest builds the Nydus manifest of one image.
func (c *converter) manifest(pi platformImage, results []*layerResult, bl *bootLayer, cfg *fileBlob) (rawManifest, error) {
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1}
	if !c.ociOutput() {
		m.MediaType = types.DockerManifestSchema2
	}
	m.Config = v1.Descriptor{MediaType: cfg.mt, Size: cfg.size, Digest: cfg.digest}
	m.Layers = append(m.Layers, c.blobLayers(results)...)
	fsv := strconv.Itoa(c.opts.FsVersion)
	m.Layers = append(m.Layers, v1.Descriptor{MediaType: bl.blob.mt, Size: bl.blob.size, Digest: bl.blob.digest,
		Annotations: map[string]string{AnnotationNydusBootstrap: "true", AnnotationFsVersion: fsv}})
	m.Annotations = map[string]string{
		AnnotationSourceDigest:   pi.desc.Digest.String(),
		AnnotationSourceRef:      c.opts.Source,
		AnnotationFsVersion:      fsv,
		AnnotationBuilderVersion: builderVersion,
	}
	if c.opts.WithReferrer {
		if !c.ociOutput() {
			return rawManifest{}, fmt.Errorf("--with-referrer needs OCI media types (add --oci)")
		}
		m.Subject = &v1.Descriptor{MediaType: pi.desc.MediaType, Size: pi.desc.Size, Digest: pi.desc.Digest}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return rawManifest{}, err
	}
	return rawManifest{b: b, mt: m.MediaType}, nil
}
