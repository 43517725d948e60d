package rafs

import (
	"context"
	"errors"
	"io"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
)

// fakeBlobs stands in for blobs a fixture does not ship (zeros of any
// size) and records the ranges read from them.
type fakeBlobs struct {
	mu     sync.Mutex
	opened []string
	ranges [][2]uint64 // [start, end)
	down   bool
}

func (f *fakeBlobs) Open(_ context.Context, id string) (backend.Blob, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errors.New("fake backend: down")
	}
	f.opened = append(f.opened, id)
	return &fakeBlob{f: f}, nil
}

type fakeBlob struct{ f *fakeBlobs }

func (b *fakeBlob) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	b.f.mu.Lock()
	defer b.f.mu.Unlock()
	b.f.ranges = append(b.f.ranges, [2]uint64{uint64(off), uint64(off) + uint64(len(p))})
	clear(p)
	return len(p), nil
}
func (b *fakeBlob) Size() int64  { return 1 << 40 }
func (b *fakeBlob) Close() error { return nil }

// union merges ranges into sorted disjoint ones.
func union(rs [][2]uint64) [][2]uint64 {
	rs = append([][2]uint64(nil), rs...)
	sort.Slice(rs, func(i, j int) bool { return rs[i][0] < rs[j][0] })
	var out [][2]uint64
	for _, r := range rs {
		if k := len(out) - 1; k >= 0 && r[0] <= out[k][1] {
			out[k][1] = max(out[k][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}

// covers reports whether the disjoint sorted ranges have covers every
// range of want.
func covers(have, want [][2]uint64) bool {
	for _, w := range want {
		i := sort.Search(len(have), func(i int) bool { return have[i][1] > w[0] })
		if i == len(have) || have[i][0] > w[0] || have[i][1] < w[1] {
			return false
		}
	}
	return true
}

func quietLog() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func prefetchManager(t *testing.T) *storage.Manager {
	m, err := storage.NewManager(storage.Options{Type: storage.TypeBlobcache, WorkDir: t.TempDir(), Log: quietLog(),
		Prefetch: storage.PrefetchOptions{Threads: 2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// storedRanges is the stored ranges of the chunks of the files under the
// image paths given ("/" for all).
func storedRanges(t *testing.T, img *Image, paths ...string) [][2]uint64 {
	var out [][2]uint64
	err := img.Walk(func(p string, n *Inode) error {
		keep := false
		for _, q := range paths {
			keep = keep || q == "/" || q == p
		}
		if !keep || !n.IsRegular() {
			return nil
		}
		refs, err := img.readPlan(context.Background(), n, 0, n.Size)
		for _, c := range refs {
			if !c.hole && !c.primary {
				out = append(out, [2]uint64{c.ci.CompressedOffset, c.ci.CompressedOffset + uint64(c.ci.CompressedSize)})
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return union(out)
}

// TestFakeBlobPrefetchFixtureTables runs prefetch on the prefetch tables
// of nydus-snapshotter's real bootstraps, as nydusd reads them (their
// blobs are not shipped: a fake backend of zeros records what is asked
// for; the chunks then fail to decode, which only ends their prefetch).
func TestFakeBlobPrefetchFixtureTables(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fixture string
		opts    PrefetchOptions
		want    []string // files whose chunks must all be fetched; nil: nothing is fetched
	}{
		// v6: the table holds nid 142, the /bin symlink (an old
		// builder's quirk): no data, and not the root, so no prefetch.
		{"v6 table of a symlink", "v6-bootstrap-chunk-pos-438272.tar.gz", PrefetchOptions{}, nil},
		// v5: the table holds only the root: the whole image.
		{"v5 table of the root", "v5-bootstrap-file-size-736032.tar.gz", PrefetchOptions{}, []string{"/"}},
		// Files override the table.
		{"v5 files override the table", "v5-bootstrap-file-size-736032.tar.gz", PrefetchOptions{Files: []string{"/etc/passwd"}}, []string{"/etc/passwd"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := snapshotterBoot(t, tc.fixture)
			if err != nil {
				t.Fatal(err)
			}
			be := &fakeBlobs{}
			img, err := OpenBytes(data, "image.boot", Options{Backend: be, Cache: prefetchManager(t), Log: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			p, err := img.StartPrefetch(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			p.Wait(ctx) // the zeros do not decode: errors are expected
			if ctx.Err() != nil {
				t.Fatal("prefetch did not end")
			}
			be.mu.Lock()
			got := union(be.ranges)
			be.mu.Unlock()
			if tc.want == nil {
				if len(got) != 0 {
					t.Fatalf("fetched %v, want nothing", got)
				}
				return
			}
			want := storedRanges(t, img, tc.want...)
			if len(want) == 0 || !covers(got, want) {
				t.Fatalf("fetched %d ranges, not covering the %d of %v", len(got), len(want), tc.want)
			}
			if tc.want[0] != "/" && !covers(want, got) {
				t.Fatalf("fetched %v, more than the chunks of %v (%v)", got, tc.want, want)
			}
		})
	}
}
