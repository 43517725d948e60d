package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/convert"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
)

// runConvert is nydusify convert: an OCI/Docker image (registry, OCI
// layout, docker save archive) to a Nydus image in a registry.
func runConvert(args []string) int {
	cmd := newCommand("convert", "--source REF --target REF [flags]", convertLong)
	fs := cmd.Flags()
	var o convert.Options
	var archive, layoutDir, chunk, batch, outJSON string
	var prefetch bool
	fs.StringVar(&o.Source, "source", "", "source image reference in a registry")
	fs.StringVar(&archive, "source-archive", "", "source image: a docker save archive (instead of --source)")
	fs.StringVar(&layoutDir, "source-oci-layout", "", "source image: an OCI image layout directory (instead of --source)")
	fs.StringVar(&o.Target, "target", "", "target image reference")
	fs.StringVar(&o.TargetSuffix, "target-suffix", "", "target = source reference + this suffix (e.g. -nydus)")
	fs.BoolVar(&o.SourceInsecure, "source-insecure", false, "source registry over plain HTTP or unverified TLS")
	fs.BoolVar(&o.TargetInsecure, "target-insecure", false, "target registry over plain HTTP or unverified TLS")
	fs.BoolVar(&o.PlainHTTP, "plain-http", false, "both registries over plain HTTP")
	fs.IntVar(&o.FsVersion, "fs-version", 6, "RAFS version: 5 or 6")
	fs.StringVar(&o.Compressor, "compressor", builder.CompressZstd, "chunk compressor: none, lz4_block, zstd")
	fs.StringVar(&chunk, "chunk-size", "0x100000", "chunk size, a power of two in [0x1000, 0x1000000]")
	fs.StringVar(&batch, "batch-size", "0", "batch small chunks together (nydusify's flag; refused: the reader cannot read batch chunks yet)")
	fs.BoolVar(&prefetch, "prefetch-patterns", false, "read the paths to prefetch from stdin, one a line")
	fs.StringVar(&o.Platform, "platform", "", "platform to convert from an index (default linux/<this arch>)")
	fs.BoolVar(&o.AllPlatforms, "all-platforms", false, "convert every platform of an index")
	fs.BoolVar(&o.MergePlatform, "merge-platform", false, "push an index holding the source manifests and the Nydus ones")
	fs.BoolVar(&o.OCI, "oci", false, "OCI media types even for a Docker source")
	fs.BoolVar(&o.WithReferrer, "with-referrer", false, "the Nydus manifest's subject is the source manifest")
	fs.StringVar(&o.CacheDir, "work-dir", "", "converted-layer cache (default: the user cache directory)")
	fs.StringVar(&o.ChunkDict, "chunk-dict", "", "chunk dictionary: bootstrap:registry:REF (a Nydus image) or a bootstrap file; its chunks are referenced, not stored again")
	fs.StringVar(&o.BuildCache, "build-cache", "", "a cache image in a registry: layers converted before (same source layer and build settings) are reused from it, new ones recorded in it")
	fs.StringVar(&o.BuildCacheVersion, "build-cache-version", convert.DefaultBuildCacheVersion, "version of the build cache image; one of another version is ignored and rewritten")
	fs.IntVar(&o.BuildCacheMaxRecords, "build-cache-max-records", convert.DefaultBuildCacheMaxRecords, "layer records kept in the build cache image, the oldest dropped")
	fs.BoolVar(&o.BuildCacheInsecure, "build-cache-insecure", false, "build cache registry over plain HTTP or unverified TLS")
	fs.IntVar(&o.Jobs, "jobs", 0, "layers converted at once (default: from cores and memory)")
	storage := addBackendFlags(fs)
	logLevel := addLogLevel(fs)
	fs.StringVar(&outJSON, "output-json", "", "write a JSON summary to this file")
	return execute(cmd, args, func([]string) error {
		if _, err := toolLogger(*logLevel, ""); err != nil {
			return err
		}
		switch {
		case archive != "" && (o.Source != "" || layoutDir != ""), layoutDir != "" && o.Source != "":
			return usageErrorf("give one of --source, --source-archive, --source-oci-layout")
		case archive != "":
			o.Source, o.SourceArchive = archive, true
		case layoutDir != "":
			o.Source, o.SourceLayout = layoutDir, true
		}
		cs, err := builder.ParseChunkSize(chunk)
		if err != nil {
			return usageErrorf("--chunk-size: %v", err)
		}
		o.ChunkSize = cs
		if o.BatchSize, err = builder.ParseChunkSize(batch); err != nil {
			return usageErrorf("--batch-size: %v", err)
		}
		if o.Backend, err = storage(); err != nil {
			return usageErrorf("%v", err)
		}
		if prefetch {
			if o.PrefetchFiles, err = readPatterns(os.Stdin); err != nil {
				return fmt.Errorf("--prefetch-patterns: %w", err)
			}
		}
		if isTerminal(os.Stderr) {
			o.Progress = os.Stderr
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		sum, err := convert.Convert(ctx, o)
		if err != nil {
			return err
		}
		if outJSON != "" {
			b, _ := json.MarshalIndent(sum, "", "  ")
			if err := os.WriteFile(outJSON, append(b, '\n'), 0o644); err != nil {
				return fmt.Errorf("--output-json: %w", err)
			}
		}
		fmt.Printf("converted %s to %s (%s)\n", sum.Source, sum.Target, sum.TargetDigest)
		return nil
	})
}

const convertLong = `Convert an OCI or Docker image to a Nydus image, as nydusify convert does: the
source is a registry reference (--source), a docker save archive (--source-archive)
or an OCI image layout directory (--source-oci-layout); the target is pushed to a
registry. Each layer becomes a RAFS blob (built in parallel, cached by the source
layer's digest, and with --build-cache recorded in a cache image in a registry
that conversions on other machines reuse), and a merged bootstrap layer comes last. Registry credentials come
from the Docker config file (~/.docker/config.json or $DOCKER_CONFIG).`

// addBackendFlags adds nydusify's --backend-type, --backend-config and
// --backend-config-file; the function returned reads them (nil: registry).
func addBackendFlags(fs *pflag.FlagSet) func() (*backend.BackendConfig, error) {
	var typ, config, file string
	fs.StringVar(&typ, "backend-type", "registry", "where the blobs are: registry, s3, oss or localfs")
	fs.StringVar(&config, "backend-config", "", "the storage backend's JSON config (s3/oss: endpoint, scheme, bucket_name, region, object_prefix, access_key_id, access_key_secret; localfs: dir)")
	fs.StringVar(&file, "backend-config-file", "", "read --backend-config from this file")
	return func() (*backend.BackendConfig, error) {
		if file != "" {
			if config != "" {
				return nil, fmt.Errorf("give --backend-config or --backend-config-file, not both")
			}
			b, err := os.ReadFile(file)
			if err != nil {
				return nil, fmt.Errorf("--backend-config-file: %w", err)
			}
			config = string(b)
		}
		return convert.ParseBackend(typ, []byte(config))
	}
}

// readPatterns reads prefetch paths, one a line; "/" alone means none
// (nydusify's default: prefetch everything, which the daemon does anyway).
func readPatterns(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		if p == "" || p == "/" {
			continue
		}
		if !strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("%q is not an absolute path", p)
		}
		out = append(out, p)
	}
	return out, sc.Err()
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
