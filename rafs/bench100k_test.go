package rafs_test

import (
	"archive/tar"
	"bufio"
	"context"
	cryptomd5 "crypto/md5"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/hostmount"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
)

// The 100,000-inode synthetic image: 1,000 directories of 100 small files,
// built once per test binary with the builder (RAFS v6, uncompressed).
var synth struct {
	once sync.Once
	root string
	boot string
	dir  string
	err  error
}

func synthImage(b *testing.B) (boot, blobDir string) {
	synth.once.Do(func() {
		root, err := os.MkdirTemp("", "rafs-100k-")
		if err != nil {
			synth.err = err
			return
		}
		synth.root = root
		// A tar layer (no 100,000 file creations): 1,000 directories of 99 files.
		src := filepath.Join(root, "layer.tar")
		f, err := os.Create(src)
		if err != nil {
			synth.err = err
			return
		}
		bw := bufio.NewWriter(f)
		tw := tar.NewWriter(bw)
		for d := 0; d < 1000 && synth.err == nil; d++ {
			dir := fmt.Sprintf("d%03d/", d)
			synth.err = tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755})
			for i := 0; i < 99 && synth.err == nil; i++ {
				data := []byte(fmt.Sprintf("file %d/%d\n", d, i))
				synth.err = tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("%sf%02d", dir, i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))})
				if synth.err == nil {
					_, synth.err = tw.Write(data)
				}
			}
		}
		if synth.err == nil {
			synth.err = tw.Close()
		}
		if synth.err == nil {
			synth.err = bw.Flush()
		}
		f.Close()
		if synth.err != nil {
			return
		}
		synth.dir = filepath.Join(root, "out")
		if synth.err = os.MkdirAll(synth.dir, 0o755); synth.err != nil {
			return
		}
		synth.boot = filepath.Join(synth.dir, "image.boot")
		_, synth.err = builder.Build(context.Background(), src, synth.boot, synth.dir, builder.Options{Type: builder.TarRafs})
	})
	if synth.err != nil {
		b.Fatal(synth.err)
	}
	return synth.boot, synth.dir
}

func rss() float64 {
	var st struct{ rss float64 }
	data, err := os.ReadFile("/proc/self/statm")
	if err == nil {
		var size, res float64
		fmt.Sscan(string(data), &size, &res)
		st.rss = res * float64(os.Getpagesize()) / 1024
	}
	return st.rss
}

// BenchmarkOpen100k: mount-time work (open) of the 100,000-inode image,
// and the RSS after a full walk compared with the bootstrap size.
func BenchmarkOpen100k(b *testing.B) {
	boot, dir := synthImage(b)
	st, _ := os.Stat(boot)
	b.ReportAllocs()
	for b.Loop() {
		img, err := rafs.Open(boot, rafs.Options{Backend: backend.NewLocalFS(dir)})
		if err != nil {
			b.Fatal(err)
		}
		img.Close()
	}
	b.StopTimer()
	img, err := rafs.Open(boot, rafs.Options{Backend: backend.NewLocalFS(dir)})
	if err != nil {
		b.Fatal(err)
	}
	defer img.Close()
	runtime.GC()
	n := 0
	img.Walk(func(string, *rafs.Inode) error { n++; return nil })
	b.ReportMetric(float64(n), "inodes")
	b.ReportMetric(float64(st.Size())/1024, "bootstrap-KiB")
	b.ReportMetric(rss(), "rss-KiB-after-walk")
}

// BenchmarkGetAttr100k: getattr over every inode of the 100k image.
func BenchmarkGetAttr100k(b *testing.B) {
	boot, dir := synthImage(b)
	img, err := rafs.Open(boot, rafs.Options{Backend: backend.NewLocalFS(dir)})
	if err != nil {
		b.Fatal(err)
	}
	defer img.Close()
	var inos []uint64
	img.Walk(func(_ string, n *rafs.Inode) error { inos = append(inos, n.Ino); return nil })
	fsys := rafs.NewFS(img, rafs.FSOptions{})
	var out fuse.AttrOut
	i := 0
	for b.Loop() {
		if st := fsys.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: inos[i%len(inos)]}}, &out); !st.Ok() {
			b.Fatal(st)
		}
		i++
	}
}

// BenchmarkFUSEWalk100k: a full tree walk (readdir + lstat of every entry)
// through the host kernel FUSE mount of the 100k image.
func BenchmarkFUSEWalk100k(b *testing.B) {
	if os.Geteuid() != 0 {
		testenv.Skip(b, "needs root for a direct FUSE mount")
	}
	boot, dir := synthImage(b)
	img, err := rafs.Open(boot, rafs.Options{Backend: backend.NewLocalFS(dir)})
	if err != nil {
		b.Fatal(err)
	}
	defer img.Close()
	mnt := b.TempDir()
	srv, err := hostmount.Mount(rafs.NewFS(img, rafs.FSOptions{}), mnt, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Unmount()
	for b.Loop() {
		n := 0
		err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if _, err := os.Lstat(p); err != nil {
				return err
			}
			n++
			return nil
		})
		if err != nil || n != 100001 {
			b.Fatalf("walk: %d entries, %v", n, err)
		}
	}
}

func md5(b []byte) string { return fmt.Sprintf("%x", cryptomd5.Sum(b)) }

// TestMain removes the synthetic image after the run.
func TestMain(m *testing.M) {
	code := m.Run()
	if synth.root != "" {
		os.RemoveAll(synth.root)
	}
	os.Exit(code)
}
