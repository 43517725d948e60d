package rafs

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/layout"
)

// The fuzz targets feed arbitrary bytes to every parser of image bytes.
// Seeds are committed under testdata/fuzz/<target>/ (cut from the real
// fixtures). Errors are expected; what must hold is "no panic, no hang,
// bounded memory" and, for what the parsers accept, the invariants below
// (checkImage): the layout structures round-trip in rafs/layout's own
// FuzzLayout.

func FuzzV5(f *testing.F) {
	be := backend.NewLocalFS(v5Blobs)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			return
		}
		exercise(data, be)
		checkImage(t, data, Options{Backend: be})
		checkImage(t, data, Options{})
	})
}

func FuzzV6(f *testing.F) {
	be := backend.NewLocalFS(v6Dir)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			return
		}
		exercise(data, be)
		checkImage(t, data, Options{Backend: be})
		checkImage(t, data, Options{AllowPlainEROFS: true})
	})
}

// checkImage opens data and, if that succeeds, asserts what an accepted
// image promises: the root is a directory, and every chunk Chunks lists
// names a blob of the blob table, starts inside the file, and (where the
// blob table records the blob's size) lies inside its blob. A refused
// bootstrap (no backend involved) is refused with ErrFormat.
func checkImage(t *testing.T, data []byte, opts Options) {
	if err := imageInvariants(data, opts); err != nil {
		t.Fatal(err)
	}
}

// imageInvariants returns a violation of checkImage's invariants. It
// never fails the test itself, so that no lock the reader holds in a
// callback is abandoned.
func imageInvariants(data []byte, opts Options) error {
	img, err := OpenBytes(data, "image.boot", opts)
	if err != nil {
		if !errors.Is(err, ErrFormat) && len(data) >= 8192 && (isV5(data) || isV6(data)) && opts.Backend == nil {
			// Every refusal of bootstrap bytes (read from memory, no
			// backend involved) is a format error.
			return fmt.Errorf("open: error %v does not wrap ErrFormat", err)
		}
		return nil
	}
	defer img.Close()
	root, err := img.Inode(RootIno)
	if err != nil || !root.IsDir() {
		return fmt.Errorf("accepted image: root inode %v, %v", root, err)
	}
	blobs := img.Blobs()
	var bad error
	visited, chunks := 0, 0
	img.Walk(func(p string, n *Inode) error {
		if visited++; visited > 2000 {
			return errStop
		}
		if !n.IsRegular() {
			return nil
		}
		return img.Chunks(context.Background(), n.Ino, func(c Chunk) error {
			if chunks++; chunks > 10000 {
				return errStop
			}
			switch b := blobs[min(int(c.BlobIndex), len(blobs)-1)]; {
			case int(c.BlobIndex) >= len(blobs):
				bad = fmt.Errorf("%s: chunk at %d names blob %d of %d", p, c.FileOffset, c.BlobIndex, len(blobs))
			case c.FileOffset >= n.Size:
				bad = fmt.Errorf("%s: chunk at %d past the file's %d bytes", p, c.FileOffset, n.Size)
			case !c.Hole && b.CompressedSize != 0 && (c.CompressedOffset > b.CompressedSize || uint64(c.CompressedSize) > b.CompressedSize-c.CompressedOffset):
				bad = fmt.Errorf("%s: chunk [%d, +%d) outside blob %s of %d bytes", p, c.CompressedOffset, c.CompressedSize, b.ID, b.CompressedSize)
			}
			if bad != nil {
				return errStop
			}
			return nil
		})
	})
	// Format errors deeper in the tree are fine: they are reported, not
	// served.
	return bad
}

var errStop = errors.New("enough")

func FuzzBlobMeta(f *testing.F) {
	c, err := newCodecs()
	if err != nil {
		f.Fatal(err)
	}
	defer c.close()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			return
		}
		if ents, size, _, err := ParseTOC(data); err == nil {
			if size > uint64(len(data)) || size != uint64(len(ents))*tocEntrySize+tarBlockSize {
				t.Fatalf("ToC of %d entries claims %d bytes of %d", len(ents), size, len(data))
			}
			for _, e := range ents {
				e.Compression()
			}
		}
		if len(data) >= blobMetaHdrSize {
			if h, err := ParseBlobMetaHeader(data[len(data)-blobMetaHdrSize:]); err == nil && h.CICompressedSize > h.CIUncompSize {
				t.Fatalf("accepted header with ci sizes %d > %d", h.CICompressedSize, h.CIUncompSize)
			}
		}
		for _, v2 := range []bool{false, true} {
			es := layout.CIV1Size
			if v2 {
				es = layout.CIV2Size
			}
			if a, err := NewCIArray(data, uint32(min(len(data)/es, 4096)), v2); err == nil {
				for i := uint32(0); i < a.Len(); i++ {
					if ci, err := a.Get(i); err == nil && (ci.UncompressedSize == 0 || ci.UncompressedSize > 1<<24 || ci.Index != i) {
						t.Fatalf("ci %d: accepted usize %d, index %d", i, ci.UncompressedSize, ci.Index)
					}
				}
			}
		}
		// The inline-bootstrap path: ToC → image.boot → decompress.
		if img, err := OpenBytes(data, "blob", Options{}); err == nil {
			img.Close()
		}
		for _, algo := range []Compression{CompressLZ4, CompressZstd, CompressGzip} {
			if out, err := c.decompress(algo, data, 4096); err == nil && len(out) != 4096 {
				t.Fatalf("%s: decompressed %d bytes, want 4096", algo, len(out))
			}
		}
	})
}
