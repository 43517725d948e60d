package convert

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
)

// benchTrees are host directories of real binaries, libraries and
// sources, one layer each (about 600 MiB in all on Debian with Go in
// /usr/local/go).
var benchTrees = []string{"/usr/bin", "/usr/local/go/src", "/usr/local/go/pkg", "/usr/libexec", "/usr/share/perl"}

// writeTreeLayer writes dir's regular files, directories and symlinks as
// a gzip tar layer file and returns the tar's size.
func writeTreeLayer(dir, out string) (int64, error) {
	f, err := os.Create(out)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	cw := &countingWriter{w: zw}
	tw := tar.NewWriter(cw)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		link := ""
		if d.Type()&fs.ModeSymlink != 0 {
			link, _ = os.Readlink(p)
		} else if !d.IsDir() && !d.Type().IsRegular() {
			return nil
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return nil
		}
		h.Name = p[1:]
		h.Uname, h.Gname = "", ""
		if d.Type().IsRegular() {
			src, err := os.Open(p)
			if err != nil {
				return nil
			}
			defer src.Close()
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			_, err = io.CopyN(tw, src, h.Size)
			return err
		}
		return tw.WriteHeader(h)
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = zw.Close()
	}
	return cw.n, err
}

// BenchmarkConvert converts a multi-layer image of real files (>= 500 MiB
// uncompressed) through the loopback registry, against the copy floor
// (pull the image into an OCI layout, push it to another repository, as
// crane pull + crane push do) measured in the same run, then converts it
// again (every layer from the cache). Run with -benchtime 1x.
func BenchmarkConvert(b *testing.B) {
	reg := testsvc.StartRegistry(b, testsvc.RegistryOptions{}).Host
	dir := b.TempDir()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	var total int64
	for i, tree := range benchTrees {
		if _, err := os.Stat(tree); err != nil {
			continue
		}
		p := filepath.Join(dir, fmt.Sprintf("layer%d.tar.gz", i))
		n, err := writeTreeLayer(tree, p)
		if err != nil {
			b.Fatal(err)
		}
		total += n
		l, err := tarball.LayerFromFile(p, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			b.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			b.Fatal(err)
		}
	}
	if total < 500<<20 {
		b.Skipf("only %d MiB of host files for the image; want >= 500 MiB", total>>20)
	}
	src := reg + "/bench/src:v1"
	sref, _ := name.ParseReference(src, name.Insecure)
	if err := remote.Write(sref, img); err != nil {
		b.Fatal(err)
	}
	mib := float64(total) / (1 << 20)
	b.SetBytes(total)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Copy floor: pull into a layout, push to another repository.
		c0 := cpuTime()
		t0 := time.Now()
		si, err := remote.Image(sref)
		if err != nil {
			b.Fatal(err)
		}
		lp, err := layout.Write(filepath.Join(dir, fmt.Sprint("pull", i)), empty.Index)
		if err != nil {
			b.Fatal(err)
		}
		if err := lp.AppendImage(si); err != nil {
			b.Fatal(err)
		}
		li, err := layoutImage(lp)
		if err != nil {
			b.Fatal(err)
		}
		cref, _ := name.ParseReference(fmt.Sprintf("%s/bench/copy%d:v1", reg, i), name.Insecure)
		if err := remote.Write(cref, li); err != nil {
			b.Fatal(err)
		}
		copySec := time.Since(t0).Seconds()
		copyCPU := cpuTime() - c0
		os.RemoveAll(filepath.Join(dir, fmt.Sprint("pull", i)))

		cache := filepath.Join(dir, fmt.Sprint("cache", i))
		o := Options{Source: src, Target: fmt.Sprintf("%s/bench/nydus%d:v1", reg, i), PlainHTTP: true, CacheDir: cache}
		o.Compressor = os.Getenv("NVFS_BENCH_COMPRESSOR") // "" : zstd
		if os.Getenv("NVFS_BENCH_PROGRESS") != "" {
			o.Progress = stampWriter{os.Stderr, time.Now()}
		}
		c1 := cpuTime()
		t1 := time.Now()
		if p := os.Getenv("NVFS_BENCH_CPUPROFILE"); p != "" {
			f, err := os.Create(p)
			if err != nil {
				b.Fatal(err)
			}
			pprof.StartCPUProfile(f)
		}
		_, err = Convert(context.Background(), o)
		if os.Getenv("NVFS_BENCH_CPUPROFILE") != "" {
			pprof.StopCPUProfile()
		}
		if err != nil {
			b.Fatal(err)
		}
		convSec := time.Since(t1).Seconds()
		convCPU := cpuTime() - c1
		t2 := time.Now()
		if _, err := Convert(context.Background(), o); err != nil {
			b.Fatal(err)
		}
		warmSec := time.Since(t2).Seconds()
		os.RemoveAll(cache)
		b.ReportMetric(mib/copySec, "copy-MiB/s")
		b.ReportMetric(mib/convSec, "convert-MiB/s")
		b.ReportMetric(copySec/convSec, "ratio")
		b.ReportMetric(warmSec/convSec, "warm/cold")
		b.ReportMetric(convCPU, "convert-cpu-s")
		b.Logf("%.0f MiB: copy floor %.1fs (%.0f MiB/s, %.1f s CPU in this process), convert %.1fs (%.0f MiB/s, %.2fx, %.1f s CPU), again %.2fs (%.1f%%)",
			mib, copySec, mib/copySec, copyCPU, convSec, mib/convSec, copySec/convSec, convCPU, warmSec, 100*warmSec/convSec)
	}
}

func layoutImage(p layout.Path) (v1.Image, error) {
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	return idx.Image(im.Manifests[0].Digest)
}

type stampWriter struct {
	w     io.Writer
	start time.Time
}

func (s stampWriter) Write(p []byte) (int, error) {
	fmt.Fprintf(s.w, "%7.2fs ", time.Since(s.start).Seconds())
	return s.w.Write(p)
}

// cpuTime is this process's user+system CPU seconds so far.
func cpuTime() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
