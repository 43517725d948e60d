package rafs

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// largestBoot writes the largest fixture bootstrap (the snapshotter v5
// image, 736 KB, 3517 inodes) to a file and returns its path.
func largestBoot(b *testing.B) string {
	data, err := snapshotterBoot(b, "v5-bootstrap-file-size-736032.tar.gz")
	if err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(b.TempDir(), "image.boot")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

func rssKiB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
			return n
		}
	}
	return 0
}

// BenchmarkOpen measures opening (mount-time work) of the largest fixture
// and reports the process RSS after a full tree walk of it.
func BenchmarkOpen(b *testing.B) {
	for _, name := range []string{"v5-bootstrap-file-size-736032.tar.gz", "v6-bootstrap-chunk-pos-438272.tar.gz"} {
		b.Run(strings.SplitN(name, "-", 2)[0], func(b *testing.B) {
			data, err := snapshotterBoot(b, name)
			if err != nil {
				b.Fatal(err)
			}
			p := filepath.Join(b.TempDir(), "image.boot")
			os.WriteFile(p, data, 0o644)
			b.ReportAllocs()
			for b.Loop() {
				img, err := Open(p, Options{})
				if err != nil {
					b.Fatal(err)
				}
				img.Close()
			}
			img, _ := Open(p, Options{})
			defer img.Close()
			runtime.GC()
			before := rssKiB()
			n := 0
			img.Walk(func(string, *Inode) error { n++; return nil })
			b.ReportMetric(rssKiB(), "rss-KiB-after-walk")
			b.ReportMetric(rssKiB()-before, "rss-KiB-walk-delta")
			b.ReportMetric(float64(n), "inodes")
		})
	}
}

// lookupSet collects (dir, name) pairs of the whole image.
func lookupSet(b *testing.B, img *Image) (dirs []uint64, names []string, inos []uint64) {
	img.Walk(func(p string, n *Inode) error {
		if p != "/" {
			parent := lookupPathB(b, img, filepath.Dir(p))
			dirs, names = append(dirs, parent), append(names, filepath.Base(p))
		}
		inos = append(inos, n.Ino)
		return nil
	})
	return
}

func lookupPathB(b *testing.B, img *Image, p string) uint64 {
	ino := uint64(RootIno)
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if part == "" {
			continue
		}
		n, err := img.Lookup(ino, part)
		if err != nil {
			b.Fatal(err)
		}
		ino = n.Ino
	}
	return ino
}

// BenchmarkLookup and BenchmarkGetAttr measure the FUSE entry points in
// process over every entry of the largest fixture (ns/op → ops/s).
func BenchmarkLookup(b *testing.B) {
	fs, dirs, names, _ := benchFS(b)
	var out fuse.EntryOut
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		k := i % len(dirs)
		if st := fs.Lookup(nil, &fuse.InHeader{NodeId: dirs[k]}, names[k], &out); !st.Ok() {
			b.Fatal(st)
		}
		i++
	}
}

func BenchmarkGetAttr(b *testing.B) {
	fs, _, _, inos := benchFS(b)
	var out fuse.AttrOut
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if st := fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: inos[i%len(inos)]}}, &out); !st.Ok() {
			b.Fatal(st)
		}
		i++
	}
}

// benchFS opens the largest fixture and lists its entries.
func benchFS(b *testing.B) (fs *FS, dirs []uint64, names []string, inos []uint64) {
	img, err := Open(largestBoot(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { img.Close() })
	dirs, names, inos = lookupSet(b, img)
	return NewFS(img, FSOptions{}), dirs, names, inos
}
