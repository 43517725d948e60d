package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
)

const createLong = `Build a RAFS image from SOURCE, as nydus-image create does: the bootstrap goes to
--bootstrap and the blob (named by its id) into --blob-dir, or to --blob FILE.
SOURCE is a directory, a tar or a tar.gz; which one is detected unless --type says.
Chunks are compressed with zstd by default, as nydus-image does.

--prefetch-policy fs puts the files listed (one image path a line) in --prefetch-files,
or on stdin when that is not given, in the image's prefetch table.`

// runCreate builds a RAFS image, like nydus-image create.
func runCreate(args []string) int {
	cmd := newCommand("create", "--bootstrap FILE (--blob-dir DIR | --blob FILE) [FLAGS] SOURCE", createLong)
	cmd.Args = nil // checked below, with a reason
	flags := cmd.Flags()
	var opts builder.Options
	bootstrap := flags.StringP("bootstrap", "B", "", "bootstrap file to write (required)")
	blobDir := flags.StringP("blob-dir", "D", "", "directory the blob is written to, named by its id (or give --blob)")
	flags.StringVar(&opts.BlobPath, "blob", "", "write the blob to this file instead of into --blob-dir")
	flags.StringVar(&opts.ParentBootstrap, "parent-bootstrap", "", "bootstrap of the layer below (its chunks are reused)")
	flags.IntVar(&opts.FsVersion, "fs-version", 6, "RAFS version: 6 or 5")
	flags.StringVarP(&opts.Compressor, "compressor", "c", builder.CompressZstd, "chunk compression: none, lz4_block or zstd")
	flags.StringVar(&opts.Digester, "digester", builder.DigestBlake3, "chunk digest: blake3 or sha256")
	chunkSize := flags.String("chunk-size", "0x100000", "chunk size, a power of two from 0x1000 to 0x1000000")
	srcType := flags.StringP("type", "t", "", "source type: dir-rafs, tar-rafs or targz-rafs (default: detected)")
	flags.StringVar(&opts.WhiteoutSpec, "whiteout-spec", builder.WhiteoutOCI, "whiteouts in the source: oci, overlayfs or none")
	prefetchPolicy := flags.String("prefetch-policy", "none", "prefetch policy: none or fs")
	prefetchFiles := flags.String("prefetch-files", "", "file listing image paths to prefetch, one a line (- for stdin); implies --prefetch-policy fs")
	flags.BoolVar(&opts.BlobInlineMeta, "blob-inline-meta", false, "also store the bootstrap inside the blob")
	logLevel := addLogLevel(flags)
	return execute(cmd, args, func(pos []string) error {
		log, err := toolLogger(*logLevel, "")
		if err != nil {
			return err
		}
		switch {
		case len(pos) == 0:
			return usageErrorf("no SOURCE given: name the directory, tar or tar.gz to build the image from")
		case len(pos) > 1:
			return usageErrorf("one SOURCE expected, got %d: %s", len(pos), strings.Join(pos, " "))
		}
		if err := required(flags, "bootstrap"); err != nil {
			return err
		}
		if *blobDir == "" && opts.BlobPath == "" {
			return usageErrorf("--blob-dir (or --blob FILE) is required: where the blob is written")
		}
		opts.Log = log
		cs, err := builder.ParseChunkSize(*chunkSize)
		if err != nil {
			return usageErrorf("--chunk-size: %v", err)
		}
		opts.ChunkSize = cs
		typ, err := sourceType(pos[0], *srcType)
		if err != nil {
			return err
		}
		opts.Type = typ
		if err := opts.Validate(); err != nil {
			return usageErrorf("%v", err)
		}
		if *prefetchFiles != "" && *prefetchPolicy == "none" {
			*prefetchPolicy = "fs"
		}
		switch *prefetchPolicy {
		case "none":
		case "fs":
			list, err := readPrefetchList(*prefetchFiles)
			if err != nil {
				return err
			}
			if len(list) == 0 {
				log.Warn("--prefetch-policy fs: the list of files to prefetch is empty: nothing to prefetch")
			}
			opts.PrefetchFiles = list
		default:
			return usageErrorf("--prefetch-policy %q: want none or fs", *prefetchPolicy)
		}
		if _, err := unix.IoctlGetTermios(int(os.Stderr.Fd()), unix.TCGETS); err == nil {
			opts.Progress = os.Stderr
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		defer stop()
		res, err := builder.Build(ctx, pos[0], *bootstrap, *blobDir, opts)
		if err != nil {
			return err
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
		return nil
	})
}

// sourceType returns the --type for src: the one given, checked against
// what src is, or the one detected (a directory, a tar, a gzip stream).
func sourceType(src, given string) (builder.SourceType, error) {
	fi, err := os.Stat(src)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("SOURCE %s: no such file or directory", src)
		}
		return "", fmt.Errorf("SOURCE %s: %w", src, err)
	}
	var detected builder.SourceType
	switch {
	case fi.IsDir():
		detected = builder.DirRafs
	case fi.Mode().IsRegular():
		head := make([]byte, 512)
		f, err := os.Open(src)
		if err != nil {
			return "", fmt.Errorf("SOURCE %s: %w", src, err)
		}
		n, _ := io.ReadFull(f, head)
		f.Close()
		switch head = head[:n]; {
		case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
			detected = builder.TargzRafs
		case isTarHeader(head):
			detected = builder.TarRafs
		}
	}
	switch given {
	case "":
		if detected == "" {
			return "", fmt.Errorf("SOURCE %s is neither a directory, a tar nor a tar.gz; "+
				"if it is one, say which with --type dir-rafs, tar-rafs or targz-rafs", src)
		}
		return detected, nil
	case string(builder.DirRafs), string(builder.TarRafs), string(builder.TargzRafs):
	default:
		return "", usageErrorf("--type %q: want dir-rafs, tar-rafs or targz-rafs", given)
	}
	if fi.IsDir() != (given == string(builder.DirRafs)) {
		want := "dir-rafs"
		if !fi.IsDir() {
			want = "tar-rafs or targz-rafs"
			if detected != "" {
				want = string(detected)
			}
		}
		return "", usageErrorf("SOURCE %s does not fit --type %s: use --type %s (or leave --type out to detect it)", src, given, want)
	}
	return builder.SourceType(given), nil
}

// isTarHeader reports whether b starts with a tar header: a ustar magic,
// or an old-style header whose checksum matches.
func isTarHeader(b []byte) bool {
	if len(b) < 512 {
		return false
	}
	if bytes.Equal(b[257:262], []byte("ustar")) {
		return true
	}
	want, err := strconv.ParseUint(strings.TrimRight(strings.TrimSpace(string(b[148:156])), "\x00 "), 8, 32)
	if err != nil {
		return false
	}
	var sum uint64
	for i, c := range b[:512] {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += uint64(c)
	}
	return sum == want
}

// readPrefetchList reads image paths, one a line, from a file or, for ""
// or "-", stdin (a terminal on stdin is refused rather than waited on).
func readPrefetchList(name string) ([]string, error) {
	var data []byte
	var err error
	if name == "" || name == "-" {
		if _, terr := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS); terr == nil {
			return nil, usageErrorf("--prefetch-policy fs: no list of files to prefetch: give --prefetch-files FILE or pipe the list on stdin")
		}
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, fmt.Errorf("--prefetch-files: %w", err)
	}
	return prefetchLines(data), nil
}

// prefetchLines are the non-blank lines of a prefetch list, trimmed.
func prefetchLines(data []byte) []string {
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// readPrefetchFile reads the daemon's --prefetch-files, nydusd's: a file
// of absolute image paths, one a line; "/" alone means the whole image.
func readPrefetchFile(name string) ([]string, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, flagPathError("--prefetch-files", name, err)
	}
	list := prefetchLines(data)
	for _, l := range list {
		if !strings.HasPrefix(l, "/") {
			return nil, usageErrorf("--prefetch-files %s: %q is not an absolute path in the image", name, l)
		}
	}
	return list, nil
}
