package rafs_test

import (
	"bytes"
	"context"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/pagecache"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
)

// TestReadAheadWithinFile: a read from the blob cache asks for the file's
// next chunks to be read into the page cache (storage.Blob.WillRead) when
// it starts the file or a chunk and does not reach the file's end, and
// the pages brought in stay within the file and within the window: twice
// the read at the file's start, as far again as the offset further on.
func TestReadAheadWithinFile(t *testing.T) {
	const cs = 64 << 10
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	r := rand.New(rand.NewSource(7))
	big, small := make([]byte, 1<<20), make([]byte, 10<<10)
	r.Read(big)
	r.Read(small)
	for name, data := range map[string][]byte{"big": big, "small": small} {
		if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	blobDir := t.TempDir()
	boot := filepath.Join(blobDir, "image.boot")
	if _, err := builder.Build(context.Background(), src, boot, blobDir, builder.Options{Type: builder.DirRafs, ChunkSize: cs}); err != nil {
		t.Fatal(err)
	}
	cacheDir := t.TempDir()
	m, err := storage.NewManager(storage.Options{Type: storage.TypeBlobcache, WorkDir: cacheDir, NoAmplify: true, NoReadAhead: true, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	img, err := rafs.Open(boot, rafs.Options{Backend: backend.NewLocalFS(blobDir), Cache: m, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	ino := map[string]uint64{}
	for name, want := range map[string][]byte{"big": big, "small": small} {
		n, err := img.Lookup(rafs.RootIno, name)
		if err != nil {
			t.Fatal(err)
		}
		ino[name] = n.Ino
		got := make([]byte, len(want))
		if _, err := img.ReadAt(context.Background(), n.Ino, got, 0); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: the fill read differs (%v)", name, err)
		}
	}
	datas, _ := filepath.Glob(filepath.Join(cacheDir, "*.blob.data"))
	if len(datas) != 1 {
		t.Fatalf("cache files: %v", datas)
	}
	data := datas[0]
	content, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	base := int64(bytes.Index(content, big[:4096]))
	if base < 0 || base%4096 != 0 || !bytes.Equal(content[base:base+int64(len(big))], big) {
		t.Fatalf("big is not in the cache file in one piece (at %d)", base)
	}
	resident := func(from, to int64) int {
		t.Helper()
		r, err := pagecache.Resident(data, base+from, to-from)
		if err != nil {
			t.Fatal(err)
		}
		return pagecache.Count(r)
	}
	pages := func(n int64) int { return int(n / int64(os.Getpagesize())) }
	for _, tc := range []struct {
		name      string
		file      string
		off, size int64
		hint      bool
		// With a hint: [off, wantTo) comes in, [wantTo, 1 MiB) does not.
		wantTo int64
	}{
		{"small file, whole", "small", 0, 128 << 10, false, 0},
		{"inside a chunk", "big", cs + 4096, 4096, false, 0},
		{"to the end", "big", 1<<20 - cs, cs, false, 0},
		{"file start", "big", 0, 128 << 10, true, 384 << 10},
		{"chunk start further on", "big", 256 << 10, cs, true, 576 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := pagecache.Drop(data, 0, 0); err != nil {
				t.Fatal(err)
			}
			before := m.Metrics().ReadAheadHints
			if _, err := img.ReadAt(context.Background(), ino[tc.file], make([]byte, tc.size), tc.off); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			hints := m.Metrics().ReadAheadHints - before
			if !tc.hint {
				if hints != 0 {
					t.Fatalf("%d hints, want none", hints)
				}
				// The kernel read no more of the cache file than asked.
				if n := resident(0, 1<<20); tc.file == "big" && n != pages(tc.size) {
					t.Fatalf("%d pages of big resident after reading %d", n, pages(tc.size))
				}
				return
			}
			if hints != 1 {
				t.Fatalf("%d hints, want 1", hints)
			}
			for deadline := time.Now().Add(10 * time.Second); resident(tc.off, tc.wantTo) < pages(tc.wantTo-tc.off); time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("[%d, %d) of the file: %d of %d pages resident 10 s after the hint", tc.off, tc.wantTo, resident(tc.off, tc.wantTo), pages(tc.wantTo-tc.off))
				}
			}
			if n := resident(tc.wantTo, 1<<20); n != 0 {
				t.Fatalf("%d pages past the window resident", n)
			}
		})
	}
}
