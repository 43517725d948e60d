package convert

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
)

// Media types and annotations of a Nydus image.
const (
	MediaTypeNydusBlob     = "application/vnd.oci.image.layer.nydus.blob.v1"
	MediaTypeNydusManifest = "application/vnd.nydus.image.manifest.v1+json"
	MediaTypeNydusConfig   = "application/vnd.nydus.image.config.v1+json"

	AnnotationNydusBlob      = "containerd.io/snapshot/nydus-blob"
	AnnotationNydusBootstrap = "containerd.io/snapshot/nydus-bootstrap"
	AnnotationFsVersion      = "containerd.io/snapshot/nydus-fs-version"
	AnnotationSourceDigest   = "containerd.io/snapshot/nydus-source-digest"
	AnnotationSourceRef      = "containerd.io/snapshot/nydus-source-reference"
	AnnotationBuilderVersion = "containerd.io/snapshot/nydus-builder-version"

	// PlatformFeatureNydus is the older mark of a Nydus manifest in an
	// index (platform.os.features).
	PlatformFeatureNydus = "nydus.remoteimage.v1"

	// BootstrapPath is where the bootstrap layer holds the bootstrap.
	BootstrapPath = "image/image.boot"
)

// builderVersion is what the manifest names as the builder.
const builderVersion = "nydus-virtiofsd"

// Options controls a conversion.
type Options struct {
	Source string // registry reference, OCI layout directory (with SourceLayout) or archive path
	// SourceLayout reads Source as an OCI image layout directory;
	// SourceArchive as a docker save archive. Neither: a registry reference.
	SourceLayout  bool
	SourceArchive bool
	Target        string // registry reference; empty: Source + TargetSuffix
	TargetSuffix  string

	SourceInsecure, TargetInsecure bool // plain HTTP / unverified TLS
	PlainHTTP                      bool // both

	FsVersion  int    // 5 or 6 (0: 6)
	Compressor string // none, lz4_block, zstd ("" : zstd)
	ChunkSize  uint32 // 0: 1 MiB
	// BatchSize is nydusify's --batch-size (small chunks packed into
	// batches compressed together). The daemon's reader cannot read batch
	// chunks yet, so anything but 0 is refused.
	BatchSize     uint32
	PrefetchFiles []string

	Platform      string // os/arch[/variant]; "" : linux/GOARCH
	AllPlatforms  bool
	MergePlatform bool // index with the source manifests and the nydus ones
	OCI           bool // OCI media types even for a Docker source
	WithReferrer  bool // subject = the source manifest

	// Backend, when set (--backend-type s3, oss or localfs), receives the
	// layer blobs instead of the target repository; the manifest then
	// holds only the bootstrap layer. See ParseBackend.
	Backend *backend.BackendConfig

	// ChunkDict is nydusify's --chunk-dict: bootstrap:registry:REF (a
	// Nydus image) or a local bootstrap file. Chunks found in it are
	// referenced from its blobs, which the manifests list as layers.
	ChunkDict string

	// BuildCache is nydusify's --build-cache: a cache image in a registry
	// recording, per source layer and build settings, the blob and layer
	// bootstrap a conversion made, so that a conversion elsewhere (with an
	// empty local cache) reuses them. BuildCacheVersion ("" : v1) must
	// match the image's; at most BuildCacheMaxRecords (0: 200) records are
	// kept, the oldest dropped.
	BuildCache           string
	BuildCacheVersion    string
	BuildCacheMaxRecords int
	BuildCacheInsecure   bool // plain HTTP / unverified TLS for the cache image

	CacheDir string // converted-layer cache ("" : user cache dir)
	Jobs     int    // parallel layer conversions (0: from cores and memory)

	Keychain authn.Keychain // nil: the Docker config file
	// Transport, when set, carries every registry request (tests put a
	// fault injector here).
	Transport http.RoundTripper
	Progress  io.Writer // per-layer progress lines; nil: quiet
}

func (o *Options) normalize() error {
	if o.FsVersion == 0 {
		o.FsVersion = 6
	}
	if o.FsVersion != 5 && o.FsVersion != 6 {
		return fmt.Errorf("--fs-version %d: want 5 or 6", o.FsVersion)
	}
	if o.Compressor == "" {
		o.Compressor = builder.CompressZstd
	}
	switch o.Compressor {
	case builder.CompressNone, builder.CompressLZ4, builder.CompressZstd:
	default:
		return fmt.Errorf("--compressor %q: want none, lz4_block or zstd", o.Compressor)
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = builder.DefaultChunkSize
	}
	if o.ChunkSize < 4096 || o.ChunkSize > 16<<20 || o.ChunkSize&(o.ChunkSize-1) != 0 {
		return fmt.Errorf("--chunk-size %#x: want a power of two in [0x1000, 0x1000000]", o.ChunkSize)
	}
	if o.BatchSize != 0 {
		return fmt.Errorf("--batch-size %#x: batch chunks are not supported: this daemon's RAFS reader cannot read them yet, so such an image could not be served; leave --batch-size at 0", o.BatchSize)
	}
	if o.Source == "" {
		return fmt.Errorf("--source is required")
	}
	if o.SourceLayout && o.SourceArchive {
		return fmt.Errorf("a source is a layout or an archive, not both")
	}
	if o.Target == "" {
		if o.TargetSuffix == "" || o.SourceLayout || o.SourceArchive {
			return fmt.Errorf("--target is required (or --target-suffix with a registry source)")
		}
		o.Target = o.Source + o.TargetSuffix
	}
	if o.BuildCache != "" {
		if o.Backend != nil {
			return fmt.Errorf("--build-cache with --backend-type %s: not supported (the cache image holds registry blobs)", o.Backend.Type)
		}
		if o.BuildCacheVersion == "" {
			o.BuildCacheVersion = DefaultBuildCacheVersion
		}
		if o.BuildCacheMaxRecords < 0 {
			return fmt.Errorf("--build-cache-max-records %d: want 1 or more", o.BuildCacheMaxRecords)
		}
		if o.BuildCacheMaxRecords == 0 {
			o.BuildCacheMaxRecords = DefaultBuildCacheMaxRecords
		}
	}
	if o.Platform == "" {
		o.Platform = "linux/" + runtime.GOARCH
	}
	if o.CacheDir == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return fmt.Errorf("no cache directory (set --work-dir): %w", err)
		}
		o.CacheDir = filepath.Join(d, "nydus-virtiofsd", "convert")
	}
	if o.Jobs <= 0 {
		o.Jobs = defaultJobs()
	}
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	return nil
}

// defaultJobs bounds parallel layer conversions by cores and by memory: a
// conversion holds up to a few chunk buffers per worker plus the builder's
// tree, so allow one per 256 MiB of available memory.
func defaultJobs() int {
	n := runtime.GOMAXPROCS(0)
	if avail := availableMemory(); avail > 0 {
		n = min(n, max(1, int(avail/(256<<20))))
	}
	return max(1, n)
}

// availableMemory reads MemAvailable from /proc/meminfo (0 if unknown).
func availableMemory() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var kb uint64
	for _, line := range strings.Split(string(b), "\n") {
		if _, err := fmt.Sscanf(line, "MemAvailable: %d kB", &kb); err == nil {
			return kb << 10
		}
	}
	return 0
}

// nameOptions are the reference-parsing options for a side.
func nameOptions(insecure bool) []name.Option {
	if insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}

// remoteOptions are the registry options for a side.
func (o *Options) remoteOptions(insecure bool) []remote.Option {
	t := o.Transport
	if t == nil {
		tr := remote.DefaultTransport.(*http.Transport).Clone()
		if insecure {
			tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // --*-insecure asks for it
		}
		t = tr
	}
	return []remote.Option{remote.WithAuthFromKeychain(o.Keychain), remote.WithTransport(t)}
}
