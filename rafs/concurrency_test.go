package rafs

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestConcurrentReads reads every file of both fixture families from many
// goroutines at once, through the FUSE entry points, and checks the bytes.
func TestConcurrentReads(t *testing.T) {
	for _, tc := range []struct {
		boot, blobs string
		validate    bool
	}{
		{v6Boot, v6Dir, true},
		{filepath.Join(fx("nydus/v5-repeatable"), "blake3-lz4_block-non_repeatable"), v5Blobs, true},
		{v5Boot, v5Blobs, false}, // zero-copy segments
	} {
		img := openFixture(t, tc.boot, tc.blobs, Options{DigestValidate: tc.validate, ChunkCacheSize: 4})
		fs := NewFS(img, FSOptions{})
		want := map[uint64]string{}
		img.Walk(func(p string, n *Inode) error {
			if n.IsRegular() {
				want[n.Ino] = md5hex(readAll(t, img, n))
			}
			return nil
		})
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				buf := make([]byte, 128<<10)
				for ino, sum := range want {
					n, _ := img.Inode(ino)
					var data []byte
					for off := uint64(0); off < n.Size; {
						res, st := fs.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: ino}, Offset: off, Size: uint32(len(buf))}, buf)
						if !st.Ok() {
							t.Errorf("read %d@%d: %v", ino, off, st)
							return
						}
						b, st := res.Bytes(make([]byte, len(buf)))
						if !st.Ok() || len(b) == 0 {
							t.Errorf("bytes %d@%d: %v", ino, off, st)
							return
						}
						data = append(data, b...)
						off += uint64(len(b))
					}
					if md5hex(data) != sum {
						t.Errorf("goroutine %d: ino %d differs", g, ino)
					}
				}
			}(g)
		}
		wg.Wait()
	}
}
