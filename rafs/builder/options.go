package builder

import (
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
)

// SourceType says how the build source is read.
type SourceType string

// Source types, named as nydus-image names them.
const (
	DirRafs   SourceType = "dir-rafs"   // a directory
	TarRafs   SourceType = "tar-rafs"   // an OCI layer tar
	TargzRafs SourceType = "targz-rafs" // an OCI layer tar.gz
)

// Compressor values accepted by Options.Compressor.
const (
	CompressNone = "none"
	CompressLZ4  = "lz4_block"
	CompressZstd = "zstd"
)

// Digester values accepted by Options.Digester.
const (
	DigestBlake3 = "blake3"
	DigestSHA256 = "sha256"
)

// WhiteoutSpec values.
const (
	WhiteoutOCI       = "oci"
	WhiteoutOverlayfs = "overlayfs"
	WhiteoutNone      = "none"
)

// DefaultChunkSize is nydus's default chunk size (1 MiB).
const DefaultChunkSize = 0x100000

// Options controls a build. The zero value builds RAFS v6 from a directory,
// uncompressed, with blake3 digests and 1 MiB chunks.
type Options struct {
	FsVersion  int        // 6 (default) or 5
	Compressor string     // none (default), lz4_block, zstd
	Digester   string     // blake3 (default), sha256
	ChunkSize  uint32     // power of two in [4 KiB, 16 MiB]; 0 means 1 MiB
	Type       SourceType // dir-rafs (default), tar-rafs, targz-rafs

	// ParentBootstrap is the bootstrap of the layer below: its tree is the
	// base the source's entries and whiteouts apply to, and its chunks are
	// reused instead of stored again.
	ParentBootstrap string

	// ChunkDict is a bootstrap whose chunks are a dictionary (nydus-image
	// --chunk-dict): a chunk whose digest is in it is referenced from the
	// dictionary's blob instead of being stored again, and the
	// dictionary's blobs come first in the blob table. Only its chunks
	// are used, not its tree. Merge takes the same dictionary.
	ChunkDict string

	// WhiteoutSpec says how the source marks deletions of the layer below:
	// "oci" (default: .wh.NAME files and .wh..wh..opq), "overlayfs" (0/0
	// character devices and trusted.overlay.opaque=y, as in an overlayfs
	// upper directory) or "none" (no whiteouts; such entries are kept).
	WhiteoutSpec string

	// PrefetchFiles lists absolute image paths to put in the prefetch table
	// (--prefetch-policy fs).
	PrefetchFiles []string

	// BlobInlineMeta also stores the bootstrap inside the blob (image.boot).
	BlobInlineMeta bool

	// EmptyBlob writes a blob even when the source adds no file data (with
	// BlobInlineMeta it then carries only the bootstrap), so that every layer
	// of an image being converted gets a blob. Such a blob has no chunks and
	// is left out of the bootstrap's blob table (Result.BlobIDs).
	EmptyBlob bool

	// Reader, when set, is the tar (or tar.gz) source, read once as a
	// stream; the source argument then only names it in messages.
	Reader io.Reader

	// BlobPath, when set, is where the blob is written instead of
	// <blob dir>/<blob id>.
	BlobPath string

	// Workers is the number of hashing/compression goroutines; 0 means
	// GOMAXPROCS.
	Workers int

	// Progress, when non-nil, receives a progress bar (use a terminal).
	Progress io.Writer

	// Log receives notes such as skipped sockets; nil means logrus's
	// standard logger.
	Log logrus.FieldLogger
}

// Validate reports an option value Build would refuse (an unknown
// compressor, digester, fs version, chunk size, ...), without building:
// command lines use it to tell a wrong command line from a failed build.
func (o Options) Validate() error { return o.normalize() }

func (o *Options) normalize() error {
	if o.FsVersion == 0 {
		o.FsVersion = 6
	}
	if o.FsVersion != 5 && o.FsVersion != 6 {
		return fmt.Errorf("fs version %d: want 5 or 6", o.FsVersion)
	}
	if err := oneOf("compressor", &o.Compressor, CompressNone, CompressLZ4, CompressZstd); err != nil {
		return err
	}
	if err := oneOf("digester", &o.Digester, DigestBlake3, DigestSHA256); err != nil {
		return err
	}
	if err := oneOf("whiteout spec", &o.WhiteoutSpec, WhiteoutOCI, WhiteoutOverlayfs, WhiteoutNone); err != nil {
		return err
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.ChunkSize < 4096 || o.ChunkSize > 16<<20 || o.ChunkSize&(o.ChunkSize-1) != 0 {
		return fmt.Errorf("chunk size %#x: want a power of two in [0x1000, 0x1000000]", o.ChunkSize)
	}
	t := string(o.Type)
	if err := oneOf("source type", &t, string(DirRafs), string(TarRafs), string(TargzRafs)); err != nil {
		return err
	}
	o.Type = SourceType(t)
	if o.Log == nil {
		o.Log = logrus.StandardLogger()
	}
	return nil
}

// oneOf defaults *v to the first allowed value and checks it is allowed.
func oneOf(what string, v *string, allowed ...string) error {
	if *v == "" {
		*v = allowed[0]
	}
	for _, a := range allowed {
		if *v == a {
			return nil
		}
	}
	return fmt.Errorf("%s %q: want one of %s", what, *v, strings.Join(allowed, ", "))
}

// ParseChunkSize parses a chunk size written in decimal or 0x hex.
func ParseChunkSize(s string) (uint32, error) {
	v, err := strconv.ParseUint(strings.TrimSpace(s), 0, 32)
	if err != nil {
		return 0, fmt.Errorf("chunk size %q: %w", s, err)
	}
	return uint32(v), nil
}

func defaultWorkers() int {
	n := runtime.GOMAXPROCS(0)
	if n < 1 {
		n = 1
	}
	return n
}
