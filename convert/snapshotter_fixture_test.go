package convert

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// TestReadBootstrapLayerSnapshotterFixtures reads the bootstrap layers
// nydus-snapshotter's tests carry (made by the real nydus-image, blobs
// absent): the bootstrap comes out whole and passes the metadata check; a
// layer without image/image.boot is refused.
func TestReadBootstrapLayerSnapshotterFixtures(t *testing.T) {
	dir := filepath.Join("..", "rafs", "testdata", "fixtures", "nydus-snapshotter")
	for _, tc := range []struct {
		file    string
		size    int
		version int
	}{
		{"v5-bootstrap-file-size-736032.tar.gz", 736032, 5},
		{"v6-bootstrap-chunk-pos-438272.tar.gz", 643072, 6},
		{"invalid.tar.gz", 0, 0},
	} {
		t.Run(tc.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join(dir, tc.file))
			if err != nil {
				t.Fatalf("fixture: %v", err)
			}
			defer f.Close()
			bl, err := ReadBootstrapLayer(f, 1<<30)
			if tc.size == 0 {
				if err == nil {
					t.Fatal("a layer without image/image.boot was accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(bl.Bootstrap) != tc.size || len(bl.DiffID) != 64 {
				t.Fatalf("bootstrap of %d bytes, diff_id %q", len(bl.Bootstrap), bl.DiffID)
			}
			img, err := rafs.OpenBytes(bl.Bootstrap, "image.boot", rafs.Options{ChunkCacheSize: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			if img.Version() != tc.version {
				t.Errorf("RAFS v%d, want v%d", img.Version(), tc.version)
			}
			if _, err := img.Check(context.Background(), rafs.CheckOptions{}); err != nil {
				t.Errorf("check: %v", err)
			}
		})
	}
}
