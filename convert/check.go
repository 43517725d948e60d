package convert

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// CheckOptions says what to check.
type CheckOptions struct {
	Target, Source                 string
	TargetInsecure, SourceInsecure bool
	PlainHTTP                      bool
	Platform                       string // which manifest of an index ("" : every Nydus one)
	Keychain                       authn.Keychain
	Transport                      http.RoundTripper
	// Backend, when set, is the storage backend holding the blobs (an
	// image converted with --backend-type): the blob-table rule looks for
	// them there, and the filesystem rule reads them from there.
	Backend *backend.BackendConfig
	// WorkDir holds downloaded bootstraps (and blobs for the filesystem
	// rule); "" : a temporary directory.
	WorkDir string
}

// CheckReport lists what was checked and every rule broken.
type CheckReport struct {
	Manifests []string `json:"manifests"` // digests checked
	Problems  []string `json:"problems"`
	// FilesCompared counts paths compared by the filesystem rule.
	FilesCompared int `json:"files_compared"`
	// Filesystem says how the filesystem rule read the Nydus image.
	Filesystem string `json:"filesystem,omitempty"`
}

// OK reports whether no rule was broken.
func (r *CheckReport) OK() bool { return len(r.Problems) == 0 }

func (r *CheckReport) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

type checker struct {
	o      *CheckOptions
	ropts  []remote.Option
	sopts  []remote.Option
	repo   name.Repository
	work   string
	report *CheckReport
}

// Check applies nydusify check's rules to the Nydus image o.Target:
// manifest rules, bootstrap rules and, with o.Source, the config and the
// filesystem rule. Broken rules are in the report; the error is for what
// kept the check from running.
func Check(ctx context.Context, o CheckOptions) (*CheckReport, error) {
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	opts := Options{Keychain: o.Keychain, Transport: o.Transport}
	c := &checker{o: &o, report: &CheckReport{}}
	c.ropts = append(opts.remoteOptions(o.TargetInsecure), remote.WithContext(ctx))
	c.sopts = append(opts.remoteOptions(o.SourceInsecure), remote.WithContext(ctx))
	ref, err := name.ParseReference(o.Target, nameOptions(o.TargetInsecure || o.PlainHTTP)...)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", o.Target, err)
	}
	c.repo = ref.Context()
	c.work = o.WorkDir
	if c.work == "" {
		if c.work, err = os.MkdirTemp("", "nydus-check-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(c.work)
	}
	d, err := remote.Get(ref, c.ropts...)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", o.Target, err)
	}
	var srcIdx v1.ImageIndex
	var srcImg v1.Image
	if o.Source != "" {
		sref, err := name.ParseReference(o.Source, nameOptions(o.SourceInsecure || o.PlainHTTP)...)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", o.Source, err)
		}
		sd, err := remote.Get(sref, c.sopts...)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", o.Source, err)
		}
		if sd.MediaType.IsIndex() {
			srcIdx, err = sd.ImageIndex()
		} else {
			srcImg, err = sd.Image()
		}
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", o.Source, err)
		}
	}
	if !d.MediaType.IsIndex() {
		if !d.MediaType.IsImage() {
			return nil, fmt.Errorf("target %s: unsupported media type %s", o.Target, d.MediaType)
		}
		src := srcImg
		if srcIdx != nil {
			if src, err = sourceFor(srcIdx, o.Platform); err != nil {
				return nil, err
			}
		}
		return c.report, c.checkManifest(ctx, d.Digest, d.Manifest, src)
	}
	idx, err := d.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", o.Target, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", o.Target, err)
	}
	merged := false
	for _, m := range im.Manifests {
		merged = merged || isNydusEntry(m)
	}
	for _, m := range im.Manifests {
		if merged && !isNydusEntry(m) {
			continue
		}
		if o.Platform != "" && m.Platform != nil {
			p, err := v1.ParsePlatform(o.Platform)
			if err != nil {
				return nil, err
			}
			if !m.Platform.Satisfies(*p) {
				continue
			}
		}
		raw, err := remote.Get(c.repo.Digest(m.Digest.String()), c.ropts...)
		if err != nil {
			return nil, fmt.Errorf("target %s: manifest %s: %w", o.Target, m.Digest, err)
		}
		src := srcImg
		if srcIdx != nil && m.Platform != nil {
			if src, err = sourceFor(srcIdx, platformString(m.Platform)); err != nil {
				return nil, err
			}
		}
		if err := c.checkManifest(ctx, m.Digest, raw.Manifest, src); err != nil {
			return nil, err
		}
	}
	if len(c.report.Manifests) == 0 {
		c.report.problem("index %s names no Nydus manifest", d.Digest)
	}
	return c.report, nil
}

func platformString(p *v1.Platform) string {
	q := *p
	q.OSFeatures = nil
	return q.String()
}

// isNydusEntry reports whether an index entry is marked as a Nydus
// manifest (artifactType, or the older os.features).
func isNydusEntry(d v1.Descriptor) bool {
	if d.ArtifactType == MediaTypeNydusManifest {
		return true
	}
	if d.Platform != nil {
		for _, f := range d.Platform.OSFeatures {
			if f == PlatformFeatureNydus {
				return true
			}
		}
	}
	return false
}

func sourceFor(idx v1.ImageIndex, platform string) (v1.Image, error) {
	o := Options{Platform: platform}
	if o.Platform == "" {
		o.Platform = "linux/" + runtime.GOARCH
	}
	s := &source{ref: "source", idx: idx}
	imgs, err := s.images(&o)
	if err != nil {
		return nil, err
	}
	return imgs[0].img, nil
}

// ManifestProblems applies the manifest rules to a parsed manifest and its
// config: every layer but the last is a Nydus blob, the last is the
// bootstrap, the diff_ids are the blob digests (the bootstrap's is checked
// against its content elsewhere).
func ManifestProblems(m *v1.Manifest, cfg *v1.ConfigFile) []string {
	var out []string
	if len(m.Layers) == 0 {
		return []string{"manifest has no layers"}
	}
	for i, l := range m.Layers[:len(m.Layers)-1] {
		if l.MediaType != MediaTypeNydusBlob {
			out = append(out, fmt.Sprintf("layer %d (%s): media type %s, want %s", i, l.Digest, l.MediaType, MediaTypeNydusBlob))
		}
		if l.Annotations[AnnotationNydusBlob] != "true" {
			out = append(out, fmt.Sprintf("layer %d (%s): no %s: \"true\" annotation", i, l.Digest, AnnotationNydusBlob))
		}
	}
	last := m.Layers[len(m.Layers)-1]
	if last.Annotations[AnnotationNydusBootstrap] != "true" {
		out = append(out, fmt.Sprintf("last layer (%s): no %s: \"true\" annotation", last.Digest, AnnotationNydusBootstrap))
	}
	if last.MediaType != types.OCILayer && last.MediaType != types.DockerLayer {
		out = append(out, fmt.Sprintf("bootstrap layer (%s): media type %s, want a gzip tar layer", last.Digest, last.MediaType))
	}
	if cfg == nil {
		return out
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		out = append(out, fmt.Sprintf("config has %d diff_ids for %d layers", len(cfg.RootFS.DiffIDs), len(m.Layers)))
		return out
	}
	for i, l := range m.Layers[:len(m.Layers)-1] {
		if cfg.RootFS.DiffIDs[i] != l.Digest {
			out = append(out, fmt.Sprintf("diff_id %d is %s, want the blob layer's digest %s", i, cfg.RootFS.DiffIDs[i], l.Digest))
		}
	}
	return out
}

func (c *checker) checkManifest(ctx context.Context, dg v1.Hash, raw []byte, src v1.Image) error {
	r := c.report
	r.Manifests = append(r.Manifests, dg.String())
	prefix := len(r.Problems)
	defer func() {
		for i := prefix; i < len(r.Problems); i++ {
			r.Problems[i] = "manifest " + dg.String() + ": " + r.Problems[i]
		}
	}()
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		r.problem("manifest does not parse: %v", err)
		return nil
	}
	cfgRaw, err := c.blob(m.Config.Digest)
	if err != nil {
		return fmt.Errorf("target %s: config %s: %w", c.o.Target, m.Config.Digest, err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(cfgRaw))
	if err != nil {
		r.problem("config does not parse: %v", err)
	}
	for _, p := range ManifestProblems(m, cfg) {
		r.problem("%s", p)
	}
	if len(m.Layers) == 0 {
		return nil
	}
	if src != nil && cfg != nil {
		scfg, err := src.ConfigFile()
		if err != nil {
			return fmt.Errorf("source %s: config: %w", c.o.Source, err)
		}
		a, _ := json.Marshal(scfg.Config)
		b, _ := json.Marshal(cfg.Config)
		if !bytes.Equal(a, b) {
			r.problem("config.config differs from the source's: %s, source has %s", b, a)
		}
	}
	// Bootstrap rules.
	last := m.Layers[len(m.Layers)-1]
	rc, err := c.blobReader(last.Digest)
	if err != nil {
		return fmt.Errorf("target %s: bootstrap layer %s: %w", c.o.Target, last.Digest, err)
	}
	bl, err := ReadBootstrapLayer(rc, 1<<30)
	rc.Close()
	if err != nil {
		r.problem("bootstrap layer %s: %v", last.Digest, err)
		return nil
	}
	if cfg != nil && len(cfg.RootFS.DiffIDs) == len(m.Layers) && cfg.RootFS.DiffIDs[len(m.Layers)-1].Hex != bl.DiffID {
		r.problem("bootstrap layer: uncompressed sha256 %s, last diff_id %s", bl.DiffID, cfg.RootFS.DiffIDs[len(m.Layers)-1])
	}
	bootPath := filepath.Join(c.work, dg.Hex+".boot")
	if err := os.WriteFile(bootPath, bl.Bootstrap, 0o644); err != nil {
		return err
	}
	layerIDs := map[string]bool{}
	for _, l := range m.Layers[:len(m.Layers)-1] {
		layerIDs[l.Digest.Hex] = true
	}
	img, err := rafs.Open(bootPath, rafs.Options{ChunkCacheSize: -1})
	if err != nil {
		r.problem("bootstrap does not open: %v", err)
		return nil
	}
	_, cerr := img.Check(ctx, rafs.CheckOptions{})
	ids := img.BlobIDs()
	img.Close()
	if cerr != nil {
		r.problem("bootstrap check: %v", cerr)
	}
	if err := c.blobTableRule(ctx, ids, layerIDs); err != nil {
		return err
	}
	if src == nil || !r.OK() {
		return nil
	}
	return c.filesystemRule(ctx, bootPath, src)
}

// blobTableRule: every blob of the bootstrap is a layer of the manifest
// or, with a storage backend, an object there.
func (c *checker) blobTableRule(ctx context.Context, ids []string, layerIDs map[string]bool) error {
	var be backend.Backend
	if c.o.Backend != nil {
		var err error
		if be, err = backend.New(c.o.Backend, backend.Options{}); err != nil {
			return fmt.Errorf("--backend-type %s: %w", c.o.Backend.Type, err)
		}
	}
	for _, id := range ids {
		switch {
		case be != nil:
			b, err := be.Open(ctx, id)
			if err != nil {
				c.report.problem("blob %s of the bootstrap is not in the %s backend: %v", id, c.o.Backend.Type, err)
				continue
			}
			b.Close()
		case !layerIDs[id]:
			c.report.problem("blob %s of the bootstrap is not a layer of the manifest", id)
		}
	}
	return nil
}

// filesystemRule compares the Nydus image, served lazily from the
// registry, with the source flattened by a library that is not ours.
func (c *checker) filesystemRule(ctx context.Context, bootPath string, src v1.Image) error {
	got, via, err := c.nydusTree(ctx, bootPath)
	c.report.Filesystem = via
	if err != nil {
		c.report.problem("filesystem rule: reading the Nydus image (%s): %v", via, err)
		return nil
	}
	want, err := SourceTree(src)
	if err != nil {
		return fmt.Errorf("source %s: %w", c.o.Source, err)
	}
	c.report.FilesCompared += len(want)
	for _, d := range CompareTrees(want, got) {
		c.report.problem("filesystem rule: %s", d)
	}
	return nil
}

func (c *checker) blobReader(d v1.Hash) (io.ReadCloser, error) {
	l, err := remote.Layer(c.repo.Digest(d.String()), c.ropts...)
	if err != nil {
		return nil, err
	}
	return l.Compressed()
}

func (c *checker) blob(d v1.Hash) ([]byte, error) {
	rc, err := c.blobReader(d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, 64<<20))
}

// BootstrapLayer is what a bootstrap layer holds.
type BootstrapLayer struct {
	Bootstrap []byte
	DiffID    string   // sha256 hex of the uncompressed tar
	BlobMetas []string // blob ids with an image/<id>.blob.meta
}

// ReadBootstrapLayer reads a bootstrap layer (gzip(tar)): the bootstrap at
// image/image.boot (or image.boot, as older builders wrote it), at most
// limit bytes, and the names of the blob.meta files.
func ReadBootstrapLayer(r io.Reader, limit int64) (*BootstrapLayer, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("not gzip: %w", err)
	}
	defer zr.Close()
	h := sha256.New()
	tr := tar.NewReader(io.TeeReader(zr, h))
	out := &BootstrapLayer{}
	var legacy []byte
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("tar: %w", err)
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		switch {
		case name == BootstrapPath || name == "image.boot":
			if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeRegA {
				return nil, fmt.Errorf("%s is not a regular file", hdr.Name)
			}
			if hdr.Size > limit {
				return nil, fmt.Errorf("%s: %d bytes, more than %d", hdr.Name, hdr.Size, limit)
			}
			b, err := io.ReadAll(io.LimitReader(tr, hdr.Size))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", hdr.Name, err)
			}
			if name == BootstrapPath {
				out.Bootstrap = b
			} else {
				legacy = b
			}
		case strings.HasPrefix(name, "image/") && strings.HasSuffix(name, ".blob.meta"):
			id := strings.TrimSuffix(strings.TrimPrefix(name, "image/"), ".blob.meta")
			if len(id) == 64 && isHex(id) {
				out.BlobMetas = append(out.BlobMetas, id)
			}
		}
	}
	if _, err := io.Copy(h, zr); err != nil { // the rest of the tar (its end blocks)
		return nil, fmt.Errorf("gzip: %w", err)
	}
	if out.Bootstrap == nil {
		out.Bootstrap = legacy
	}
	if out.Bootstrap == nil {
		return nil, fmt.Errorf("no %s in the bootstrap layer", BootstrapPath)
	}
	out.DiffID = hex.EncodeToString(h.Sum(nil))
	return out, nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}
