package builder

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
)

// benchTreeSize is the size of the benchmark tree: NYDUS_BENCH_TREE_SIZE
// bytes (suffixes K, M, G allowed; 1G for the record), 64 MiB by default.
func benchTreeSize(b *testing.B) int64 {
	s := os.Getenv("NYDUS_BENCH_TREE_SIZE")
	if s == "" {
		return 64 << 20
	}
	mult := int64(1)
	switch s[len(s)-1] {
	case 'K', 'k':
		mult, s = 1<<10, s[:len(s)-1]
	case 'M', 'm':
		mult, s = 1<<20, s[:len(s)-1]
	case 'G', 'g':
		mult, s = 1<<30, s[:len(s)-1]
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		b.Fatalf("NYDUS_BENCH_TREE_SIZE=%q: %v", os.Getenv("NYDUS_BENCH_TREE_SIZE"), err)
	}
	return v * mult
}

var benchTree struct {
	once sync.Once
	dir  string
	size int64
	err  error
}

// mixedTree writes a deterministic tree of about size bytes: mostly small
// files, some medium and a few large ones; half incompressible, half text.
func mixedTree(dir string, size int64) (int64, error) {
	r := rand.New(rand.NewPCG(1, 2))
	var total int64
	buf := make([]byte, 8<<20)
	for i := 0; total < size; i++ {
		var n int
		switch x := r.Float64(); {
		case x < 0.70:
			n = r.IntN(16 << 10)
		case x < 0.95:
			n = 16<<10 + r.IntN(1<<20)
		default:
			n = 1<<20 + r.IntN(7<<20)
		}
		data := buf[:n]
		if i%2 == 0 {
			for j := 0; j+8 <= n; j += 8 {
				v := r.Uint64()
				for k := 0; k < 8; k++ {
					data[j+k] = byte(v >> (8 * k))
				}
			}
		} else {
			line := []byte(fmt.Sprintf("file %d: the quick brown fox jumps over the lazy dog\n", i))
			for j := 0; j < n; j += len(line) {
				copy(data[j:], line)
			}
		}
		p := filepath.Join(dir, fmt.Sprintf("d%02d/s%02d/f%07d", i%61, i%17, i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return 0, err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return 0, err
		}
		total += int64(n)
	}
	return total, nil
}

func getBenchTree(b *testing.B) (string, int64) {
	benchTree.once.Do(func() {
		dir, err := os.MkdirTemp("", "nydus-bench-tree-")
		if err != nil {
			benchTree.err = err
			return
		}
		benchTree.dir = dir
		benchTree.size, benchTree.err = mixedTree(dir, benchTreeSize(b))
	})
	if benchTree.err != nil {
		b.Fatal(benchTree.err)
	}
	return benchTree.dir, benchTree.size
}

// BenchmarkBuild compares build throughput with mkfs.erofs on the same
// tree (chunked, external blob device, so both write metadata + a data
// image), and measures dedup of a second identical layer.
func BenchmarkBuild(b *testing.B) {
	tree, size := getBenchTree(b)
	for _, c := range []struct {
		name string
		opts Options
	}{
		{"builder-none", Options{}},
		{"builder-zstd", Options{Compressor: CompressZstd}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				out := b.TempDir()
				if _, err := Build(context.Background(), tree, filepath.Join(out, "boot"), out, c.opts); err != nil {
					b.Fatal(err)
				}
				os.RemoveAll(out)
			}
		})
	}
	for _, m := range []struct {
		name string
		args []string
	}{
		// chunked files on a blob device, as our images
		{"mkfs.erofs-chunked", []string{"--chunksize=1048576", "--blobdev={out}/blob"}},
		// plain EROFS, file data in the image itself
		{"mkfs.erofs-plain", nil},
	} {
		b.Run(m.name, func(b *testing.B) {
			if _, err := exec.LookPath("mkfs.erofs"); err != nil {
				testenv.Skip(b, "mkfs.erofs not installed")
			}
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				out := b.TempDir()
				var args []string
				for _, a := range m.args {
					args = append(args, strings.ReplaceAll(a, "{out}", out))
				}
				args = append(args, "-T0", filepath.Join(out, "meta"), tree)
				if o, err := exec.Command("mkfs.erofs", args...).CombinedOutput(); err != nil {
					b.Fatalf("mkfs.erofs: %v: %s", err, o)
				}
				os.RemoveAll(out)
			}
		})
	}
	b.Run("dedup-second-layer", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			out := b.TempDir()
			base, err := Build(context.Background(), tree, filepath.Join(out, "base"), out, Options{})
			if err != nil {
				b.Fatal(err)
			}
			top, err := Build(context.Background(), tree, filepath.Join(out, "top"), out, Options{ParentBootstrap: base.BootstrapPath})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(100*float64(top.Stats.NewBlobBytes)/float64(base.Stats.NewBlobBytes), "%new-data")
			os.RemoveAll(out)
		}
	})
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchTree.dir != "" {
		os.RemoveAll(benchTree.dir)
	}
	os.Exit(code)
}
