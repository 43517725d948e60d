package builder

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestKernelMount builds images of a tree holding every kind of entry and
// checks what the Linux EROFS driver and fsck.erofs make of them.
func TestKernelMount(t *testing.T) {
	requireKernelErofs(t)
	src := filepath.Join(t.TempDir(), "src")
	makeSource(t, src)
	want := scanTree(t, src)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"blake3", Options{}},
		{"sha256", Options{Digester: DigestSHA256}},
		{"blake3-4k-chunks", Options{ChunkSize: 0x1000}},
		{"sha256-16m-chunks", Options{Digester: DigestSHA256, ChunkSize: 16 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			res, err := Build(context.Background(), src, filepath.Join(out, "boot"), out, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if res.BlobID == "" {
				t.Fatal("no blob written")
			}
			mnt := mountErofs(t, res.BootstrapPath, res.BlobPath)
			compareTrees(t, want, scanTree(t, mnt))
			fsck(t, res.BootstrapPath, res.BlobPath)
		})
	}
}

// fsck runs fsck.erofs on an image, extracting it to check every file.
func fsck(t *testing.T, boot string, blobs ...string) {
	t.Helper()
	if _, err := exec.LookPath("fsck.erofs"); err != nil {
		t.Log("fsck.erofs not installed (erofs-utils); skipping the fsck check")
		return
	}
	args := []string{}
	for _, b := range blobs {
		args = append(args, "--device="+b)
	}
	ext := filepath.Join(t.TempDir(), "x")
	args = append(args, "--extract="+ext, boot)
	out, err := exec.Command("fsck.erofs", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("fsck.erofs %v: %v\n%s", args, err, out)
	}
}

// TestReproducible builds the same tree twice and wants identical bytes.
func TestReproducible(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	makeSource(t, src)
	for _, opts := range []Options{{}, {Compressor: CompressZstd, Digester: DigestSHA256}} {
		var boots, blobs [][]byte
		for i := 0; i < 2; i++ {
			opts.Workers = 1 + 2*i // scheduling must not matter
			out := t.TempDir()
			res, err := Build(context.Background(), src, filepath.Join(out, "boot"), out, opts)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(res.BootstrapPath)
			d, _ := os.ReadFile(res.BlobPath)
			boots, blobs = append(boots, b), append(blobs, d)
			left, _ := filepath.Glob(filepath.Join(out, ".*"))
			if len(left) != 0 {
				t.Errorf("temporary files left behind: %v", left)
			}
		}
		if !bytes.Equal(boots[0], boots[1]) || !bytes.Equal(blobs[0], blobs[1]) {
			t.Errorf("%+v: two builds of the same tree differ", opts)
		}
	}
}

// TestKernelMountFlat mounts the flat block-device view (ExportBlock), so
// mapped_blkaddr is exercised, for compressed and layered images too.
func TestKernelMountFlat(t *testing.T) {
	requireKernelErofs(t)
	src := filepath.Join(t.TempDir(), "src")
	makeSource(t, src)
	want := scanTree(t, src)
	for _, opts := range []Options{{}, {Compressor: CompressZstd}, {Compressor: CompressLZ4, Digester: DigestSHA256}} {
		out := t.TempDir()
		res, err := Build(context.Background(), src, filepath.Join(out, "boot"), out, opts)
		if err != nil {
			t.Fatal(err)
		}
		flat := filepath.Join(out, "flat.img")
		if err := ExportBlock(res.BootstrapPath, out, flat); err != nil {
			t.Fatal(err)
		}
		// (fsck.erofs 1.5 cannot check this view: it insists on one
		// --device per extra device)
		compareTrees(t, want, scanTree(t, mountErofs(t, flat)))
	}
}

// TestKernelMountNoData: a tree without file data has no blob at all.
func TestKernelMountNoData(t *testing.T) {
	requireKernelErofs(t)
	src := filepath.Join(t.TempDir(), "src")
	must(t, os.MkdirAll(filepath.Join(src, "d/e"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "d/empty"), nil, 0o600))
	must(t, os.Symlink("d", filepath.Join(src, "l")))
	want := scanTree(t, src)
	out := t.TempDir()
	res, err := Build(context.Background(), src, filepath.Join(out, "boot"), out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.BlobID != "" || len(res.BlobIDs) != 0 {
		t.Fatalf("blob %q / %v written for a tree without data", res.BlobID, res.BlobIDs)
	}
	compareTrees(t, want, scanTree(t, mountErofs(t, res.BootstrapPath)))
	compareTrees(t, want, scanImage(t, res.BootstrapPath, out))
	fsck(t, res.BootstrapPath)
}

// TestManyChunks needs chunk-info indexes above 65535, whose bits 16..23 go
// into the high byte of the EROFS device_id field: the kernel must mask
// them away and our reader must put them back.
func TestManyChunks(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping in -short mode: builds a 257 MiB image")
	}
	src := filepath.Join(t.TempDir(), "src")
	must(t, os.MkdirAll(src, 0o755))
	const n = 1<<16 + 300
	data := make([]byte, n*4096)
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint64(data[i*4096:], uint64(i)+1) // every block unique
	}
	must(t, os.WriteFile(filepath.Join(src, "big"), data, 0o644))
	data = nil
	want := scanTree(t, src)
	out := t.TempDir()
	res, err := Build(context.Background(), src, filepath.Join(out, "boot"), out, Options{ChunkSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stats.NewChunks != n {
		t.Fatalf("%d chunks stored, want %d", res.Stats.NewChunks, n)
	}
	compareTrees(t, want, scanImage(t, res.BootstrapPath, out))
	requireKernelErofs(t)
	compareTrees(t, want, scanTree(t, mountErofs(t, res.BootstrapPath, res.BlobPath)))
}
