package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
)

const createUsage = `usage: nydus-virtiofsd create --bootstrap B --blob-dir D [--blob FILE]
       [--parent-bootstrap P] [--fs-version 6|5] [--compressor none|lz4_block|zstd]
       [--digester blake3|sha256] [--chunk-size 0x100000]
       [--type dir-rafs|tar-rafs|targz-rafs] [--whiteout-spec oci|overlayfs|none]
       [--prefetch-policy fs --prefetch-files LIST] [--blob-inline-meta] SOURCE`

// runCreate builds a RAFS image, like nydus-image create.
func runCreate(args []string) int {
	fs := flag.NewFlagSet("create", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(os.Stderr, createUsage); fs.PrintDefaults() }
	var opts builder.Options
	bootstrap := fs.String("bootstrap", "", "bootstrap file to write")
	blobDir := fs.String("blob-dir", "", "directory the blob is written to, named by its id")
	fs.StringVar(&opts.BlobPath, "blob", "", "write the blob to this file instead")
	fs.StringVar(&opts.ParentBootstrap, "parent-bootstrap", "", "bootstrap of the layer below")
	fs.IntVar(&opts.FsVersion, "fs-version", 6, "RAFS version: 6 or 5")
	fs.StringVar(&opts.Compressor, "compressor", "none", "chunk compression: none, lz4_block, zstd")
	fs.StringVar(&opts.Digester, "digester", "blake3", "chunk digest: blake3, sha256")
	chunkSize := fs.String("chunk-size", "0x100000", "chunk size, a power of two")
	srcType := fs.String("type", "dir-rafs", "source type: dir-rafs, tar-rafs, targz-rafs")
	fs.StringVar(&opts.WhiteoutSpec, "whiteout-spec", "oci", "whiteouts in the source: oci, overlayfs, none")
	prefetchPolicy := fs.String("prefetch-policy", "none", "prefetch policy: none or fs")
	prefetchFiles := fs.String("prefetch-files", "", "file listing image paths to prefetch, one a line (- for stdin)")
	fs.BoolVar(&opts.BlobInlineMeta, "blob-inline-meta", false, "also store the bootstrap inside the blob")
	logLevel := fs.String("log-level", "info", "log level")

	// Accept options after SOURCE too.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) != 1 || *bootstrap == "" || (*blobDir == "" && opts.BlobPath == "") {
		fs.Usage()
		return 2
	}
	log := logrus.New()
	log.SetOutput(os.Stderr)
	if lvl, err := logrus.ParseLevel(*logLevel); err == nil {
		log.SetLevel(lvl)
	}
	opts.Log = log
	cs, err := builder.ParseChunkSize(*chunkSize)
	if err != nil {
		fmt.Fprintln(os.Stderr, "create:", err)
		return 2
	}
	opts.ChunkSize = cs
	opts.Type = builder.SourceType(*srcType)
	switch *prefetchPolicy {
	case "none":
	case "fs":
		list, err := readPrefetchList(*prefetchFiles)
		if err != nil {
			fmt.Fprintln(os.Stderr, "create:", err)
			return 2
		}
		opts.PrefetchFiles = list
	default:
		fmt.Fprintf(os.Stderr, "create: prefetch policy %q: want none or fs\n", *prefetchPolicy)
		return 2
	}
	if _, err := unix.IoctlGetTermios(int(os.Stderr.Fd()), unix.TCGETS); err == nil {
		opts.Progress = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := builder.Build(ctx, positional[0], *bootstrap, *blobDir, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "create:", err)
		return 1
	}
	st := res.Stats
	log.Infof("%d inodes, %d bytes of file data, %d chunks stored, %d deduplicated, blob %d bytes",
		st.Inodes, st.BytesIn, st.NewChunks, st.DedupChunks, st.BlobSize)
	fmt.Printf("bootstrap: %s\n", res.BootstrapPath)
	if res.BlobID != "" {
		fmt.Printf("blob: %s (%s)\n", res.BlobID, res.BlobPath)
	} else {
		fmt.Println("blob: none (no new data)")
	}
	return 0
}

// readPrefetchList reads image paths, one a line, from a file or stdin.
func readPrefetchList(name string) ([]string, error) {
	var data []byte
	var err error
	if name == "" || name == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, fmt.Errorf("prefetch files: %w", err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out, nil
}
