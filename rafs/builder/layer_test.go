package builder

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"golang.org/x/sys/unix"
)

// layerSpec writes one layer. ociWhiteouts picks the OCI form (.wh.NAME,
// .wh..wh..opq) used by image layers, or the overlayfs form (0/0 character
// devices, trusted.overlay.opaque) the kernel's overlayfs reads.
type layerSpec func(t testing.TB, dir string, ociWhiteouts bool)

func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for p, body := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if body == "/" {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func baseLayer(t testing.TB, dir string, _ bool) {
	writeFiles(t, dir, map[string]string{
		"keep.txt": "keep", "del.txt": "delete me", "replace.txt": "old",
		"dirdel/a": "a", "dirdel/b": "b", "opq/old1": "1", "opq/sub/x": "x",
		"mix/lower-only": "lo", "mix/shared.txt": "lower", "todir": "file",
		"fromdir/y": "y", "emptydir": "/",
	})
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i * 7 / 5)
	}
	must(t, os.WriteFile(filepath.Join(dir, "big.bin"), big, 0o644))
	must(t, os.Symlink("keep.txt", filepath.Join(dir, "ln")))
	must(t, unix.Setxattr(filepath.Join(dir, "keep.txt"), "user.k", []byte("v"), 0))
	must(t, os.Lchown(filepath.Join(dir, "mix"), 10, 20))
}

func upperLayer(t testing.TB, dir string, oci bool) {
	writeFiles(t, dir, map[string]string{
		"replace.txt": "new content", "opq/new1": "n1", "mix/shared.txt": "upper",
		"mix/new.txt": "new", "todir/inner": "in", "fromdir": "now a file",
		"newdir/deep/file": "deep",
	})
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i * 7 / 5)
	}
	must(t, os.WriteFile(filepath.Join(dir, "bigcopy.bin"), big, 0o644))
	must(t, os.Link(filepath.Join(dir, "mix/new.txt"), filepath.Join(dir, "newdir/hardlink")))
	must(t, os.Chmod(filepath.Join(dir, "mix"), 0o700))
	whiteout := func(p string) {
		if oci {
			must(t, os.WriteFile(filepath.Join(dir, filepath.Dir(p), ".wh."+filepath.Base(p)), nil, 0o644))
		} else {
			must(t, unix.Mknod(filepath.Join(dir, p), unix.S_IFCHR|0o644, 0))
		}
	}
	whiteout("del.txt")
	whiteout("dirdel")
	whiteout("mix/lower-only")
	if oci {
		must(t, os.WriteFile(filepath.Join(dir, "opq", whiteoutOpaque), nil, 0o644))
	} else {
		must(t, unix.Setxattr(filepath.Join(dir, "opq"), "trusted.overlay.opaque", []byte("y"), 0))
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestLayersMatchOverlayfs builds a base image and an upper OCI layer on
// top of it, and compares the merged image with what the kernel's overlayfs
// shows for the same two layers.
func TestLayersMatchOverlayfs(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, "skipping: overlayfs mounts need root")
	}
	tmp := t.TempDir()
	var dirs [2][2]string // [layer][oci?]
	for i, spec := range []layerSpec{baseLayer, upperLayer} {
		for j, oci := range []bool{false, true} {
			d := filepath.Join(tmp, []string{"base", "upper"}[i]+[]string{"-ovl", "-oci"}[j])
			must(t, os.MkdirAll(d, 0o755))
			spec(t, d, oci)
			dirs[i][j] = d
		}
	}
	// identical mtimes in both forms
	for _, d := range []string{dirs[0][0], dirs[0][1], dirs[1][0], dirs[1][1]} {
		walkPaths(t, d, func(p string) {
			ts := []unix.Timespec{{Sec: 1700000000, Nsec: 5}, {Sec: 1700000000, Nsec: 5}}
			must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW))
		})
	}
	mnt := t.TempDir()
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY,
		"lowerdir="+dirs[1][0]+":"+dirs[0][0]); err != nil {
		testenv.Skipf(t, "skipping: cannot mount overlayfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, 0) })
	want := scanTree(t, mnt)

	for _, tc := range []struct {
		name       string
		opts       Options
		upperCompr string
	}{
		{"none", Options{}, ""},
		{"zstd", Options{Compressor: CompressZstd, Digester: DigestSHA256}, CompressZstd},
		{"none-then-lz4", Options{}, CompressLZ4},
		{"overlayfs-upper-dir", Options{}, ""},
		{"v5", Options{FsVersion: 5, Compressor: CompressLZ4}, CompressLZ4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			base, err := Build(context.Background(), dirs[0][1], filepath.Join(out, "base.boot"), out, tc.opts)
			must(t, err)
			layer := filepath.Join(tmp, "upper-"+tc.name+".tar.gz")
			tarFromDir(t, dirs[1][1], layer, true)
			opts := tc.opts
			opts.Compressor = tc.upperCompr
			opts.Type, opts.ParentBootstrap = TargzRafs, base.BootstrapPath
			if tc.name == "overlayfs-upper-dir" {
				// the overlayfs upper directory itself, whiteouts as 0/0 devices
				layer, opts.Type, opts.WhiteoutSpec = dirs[1][0], DirRafs, WhiteoutOverlayfs
			}
			top, err := Build(context.Background(), layer, filepath.Join(out, "top.boot"), out, opts)
			must(t, err)
			if len(top.BlobIDs) != 2 || top.BlobIDs[0] != base.BlobID || top.BlobIDs[1] != top.BlobID {
				t.Fatalf("blob table %v, want [%s %s]", top.BlobIDs, base.BlobID, top.BlobID)
			}
			if top.Stats.DedupChunks < 3 {
				t.Errorf("bigcopy.bin was not deduplicated against the parent: %+v", top.Stats)
			}
			compareTrees(t, want, scanImage(t, top.BootstrapPath, out))
			if tc.opts.FsVersion == 5 {
				return // the kernel reads v6 only
			}
			requireKernelErofs(t)
			flat := filepath.Join(out, "flat.img")
			must(t, ExportBlock(top.BootstrapPath, out, flat))
			compareTrees(t, want, scanTree(t, mountErofs(t, flat)))
			if tc.opts.Compressor == "" && tc.upperCompr == "" {
				km := mountErofs(t, top.BootstrapPath, base.BlobPath, top.BlobPath)
				compareTrees(t, want, scanTree(t, km))
				fsck(t, top.BootstrapPath, base.BlobPath, top.BlobPath)
			}
		})
	}
}

// TestLayerReproducible builds the same layer twice on the same parent,
// v6 and v5, and wants identical bootstraps and blobs.
func TestLayerReproducible(t *testing.T) {
	tmp := t.TempDir()
	base, upper := filepath.Join(tmp, "base"), filepath.Join(tmp, "upper")
	must(t, os.MkdirAll(base, 0o755))
	must(t, os.MkdirAll(upper, 0o755))
	baseLayer(t, base, true)
	upperLayer(t, upper, true)
	for _, opts := range []Options{{}, {FsVersion: 5, Compressor: CompressZstd, Digester: DigestSHA256}} {
		out := t.TempDir()
		parent, err := Build(context.Background(), base, filepath.Join(out, "base.boot"), out, opts)
		must(t, err)
		opts.ParentBootstrap = parent.BootstrapPath
		var got [][]byte
		for i := 0; i < 2; i++ {
			opts.Workers = 1 + 2*i
			top, err := Build(context.Background(), upper, filepath.Join(out, "top.boot"), filepath.Join(out, fmt.Sprint(i)), opts)
			must(t, err)
			b, err := os.ReadFile(top.BootstrapPath)
			must(t, err)
			d, err := os.ReadFile(top.BlobPath)
			must(t, err)
			got = append(got, b, d)
		}
		if !bytes.Equal(got[0], got[2]) || !bytes.Equal(got[1], got[3]) {
			t.Errorf("%+v: two builds of the same layer differ", opts)
		}
	}
}
