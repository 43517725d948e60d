package rafs

import (
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/layout"
)

// The fuzz targets feed arbitrary bytes to every parser of image bytes.
// Seeds are committed under testdata/fuzz/<target>/ (cut from the real
// fixtures); the only property checked is "no panic, no hang, bounded
// memory" — errors are expected.

func FuzzV5(f *testing.F) {
	be := backend.NewLocalFS(v5Blobs)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			return
		}
		exercise(data, be)
	})
}

func FuzzV6(f *testing.F) {
	be := backend.NewLocalFS(v6Dir)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			return
		}
		exercise(data, be)
		if img, err := OpenBytes(data, "x", Options{AllowPlainEROFS: true}); err == nil {
			img.Walk(func(p string, n *Inode) error { _, err := img.Xattrs(n.Ino); return err })
			img.Close()
		}
	})
}

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
		if ents, _, _, err := ParseTOC(data); err == nil {
			for _, e := range ents {
				e.Compression()
			}
		}
		if len(data) >= blobMetaHdrSize {
			ParseBlobMetaHeader(data[len(data)-blobMetaHdrSize:])
		}
		for _, v2 := range []bool{false, true} {
			es := layout.CIV1Size
			if v2 {
				es = layout.CIV2Size
			}
			if a, err := NewCIArray(data, uint32(min(len(data)/es, 4096)), v2); err == nil {
				for i := uint32(0); i < a.Len(); i++ {
					a.Get(i)
				}
			}
		}
		// The inline-bootstrap path: ToC → image.boot → decompress.
		if img, err := OpenBytes(data, "blob", Options{}); err == nil {
			img.Close()
		}
		for _, algo := range []Compression{CompressLZ4, CompressZstd, CompressGzip} {
			c.decompress(algo, data, 4096)
		}
	})
}
