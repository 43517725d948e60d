package e2e

import (
	"bufio"
	"crypto/md5"
	"encoding/hex"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/fuseclient"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testdriver"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// rafsFixture is an image of the shared fixtures with the md5 of every
// regular file, as PROVENANCE.md states them.
type rafsFixture struct {
	name      string
	boot      string // relative to fixtures/rafs
	blobDir   string
	md5s      map[string]string // path → md5; nil: read from resultFile
	result    string            // a v5 .result file (tree -J, then md5sum lines)
	zeroCopy  bool              // data uncompressed in a local file
	windowsOf string            // file whose bytes are also read in every layout
}

var rafsFixtures = []rafsFixture{
	{
		name:    "v6-2.2",
		boot:    "nydus/v6-2.2/rafs-v6-2.2.boot",
		blobDir: "nydus/v6-2.2",
		md5s: map[string]string{
			"/lib.rs":     "4709cf8873e419ecedc7d43fdee4a75f",
			"/sync_io.rs": "5442bc7dc9dc5f985c7594e23866ae6f",
		},
		windowsOf: "/lib.rs",
	},
	{
		name:      "v5-sha256-nocompress",
		boot:      "nydus/v5-repeatable/sha256-nocompress-repeatable",
		blobDir:   "nydus/v5-repeatable/blobs",
		result:    "nydus/v5-repeatable/sha256-nocompress-repeatable.result",
		zeroCopy:  true,
		windowsOf: "/normal-file-test/holefiles/head-hole-1",
	},
	{
		name:      "v5-blake3",
		boot:      "nydus/v5-repeatable/blake3-lz4_block-non_repeatable",
		blobDir:   "nydus/v5-repeatable/blobs",
		result:    "nydus/v5-repeatable/blake3-lz4_block-non_repeatable.result",
		zeroCopy:  true,
		windowsOf: "/normal-file-test/busybox/1f777dbdd68d1c4d554bc0d20e027bfef9ed2dfe2d8d5f029e958552a0e12475/layer.tar",
	},
}

var md5Line = regexp.MustCompile(`^([0-9a-f]{32})  (/.*)$`)

// resultMD5s reads the md5sum lines of a v5 .result file.
func resultMD5s(t testing.TB, p string) map[string]string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := md5Line.FindStringSubmatch(sc.Text()); m != nil {
			out[m[2]] = m[1]
		}
	}
	if err := sc.Err(); err != nil || len(out) == 0 {
		t.Fatalf("%s: %d md5 lines, %v", p, len(out), err)
	}
	return out
}

// serveFixture opens a fixture image and serves it.
func serveFixture(t testing.TB, fx rafsFixture, queues int) (*daemon, *readCounter, map[string]string) {
	t.Helper()
	base := fixturesDir
	img, err := rafs.Open(filepath.Join(base, fx.boot), rafs.Options{Backend: backend.NewLocalFS(filepath.Join(base, fx.blobDir)), Log: quietLogger()})
	if err != nil {
		t.Fatalf("open %s: %v", fx.boot, err)
	}
	t.Cleanup(func() { img.Close() })
	md5s := fx.md5s
	if fx.result != "" {
		md5s = resultMD5s(t, filepath.Join(base, fx.result))
	}
	counter := &readCounter{RawFileSystem: rafs.NewFS(img, rafs.FSOptions{})}
	return startDaemon(t, counter, queues, 0), counter, md5s
}

func TestRAFSEndToEnd(t *testing.T) {
	for _, fx := range rafsFixtures {
		for _, seq := range sequences {
			t.Run(fx.name+"/"+seq.String(), func(t *testing.T) {
				dm, counter, md5s := serveFixture(t, fx, 1)
				g := connectGuest(t, dm, seq, 1)
				c := g.client(1, testdriver.Layout{SegmentSize: 4096, Indirect: true})
				g.init(c)

				// READDIRPLUS walk: the regular files are exactly those
				// with md5s.
				files := map[string]*fuse.EntryOut{}
				walkTree(t, c, "/", fuse.FUSE_ROOT_ID, files)
				var got, want []string
				for p := range files {
					got = append(got, p)
				}
				for p := range md5s {
					want = append(want, p)
				}
				sort.Strings(got)
				sort.Strings(want)
				if !slices.Equal(got, want) {
					t.Fatalf("regular files by READDIRPLUS:\n%q\nwant\n%q", got, want)
				}

				// LOOKUP, GETATTR, OPEN, READ (1 MiB), RELEASE, FORGET of
				// every file; md5 of the bytes.
				for p, sum := range md5s {
					e, err := lookupPath(c, p)
					if err != nil {
						t.Fatal(err)
					}
					a, err := c.GetAttr(e.NodeId)
					if err != nil {
						t.Fatalf("GETATTR %s: %v", p, err)
					}
					if a.Attr.Size != files[p].Attr.Size || a.Attr.Ino != files[p].Attr.Ino || a.Attr.Mode&syscall.S_IFMT != syscall.S_IFREG {
						t.Fatalf("%s: GETATTR %+v, READDIRPLUS %+v", p, a.Attr, files[p].Attr)
					}
					op, err := c.Open(e.NodeId, syscall.O_RDONLY)
					if err != nil {
						t.Fatalf("OPEN %s: %v", p, err)
					}
					data, err := readRange(c, e.NodeId, op.Fh, 0, int(a.Attr.Size)+1, 1<<20)
					if err != nil {
						t.Fatalf("%s: %v", p, err)
					}
					if s := md5.Sum(data); hex.EncodeToString(s[:]) != sum || len(data) != int(a.Attr.Size) {
						t.Fatalf("%s: %d bytes, md5 %x, want %d bytes, md5 %s", p, len(data), s, a.Attr.Size, sum)
					}
					if p == fx.windowsOf {
						for _, l := range layouts {
							t.Run("read-"+l.name, func(t *testing.T) {
								checkWindows(t, g.client(1, l.lay), e.NodeId, op.Fh, data, l.maxChunk)
							})
						}
					}
					if err := c.Release(e.NodeId, op.Fh); err != nil {
						t.Fatalf("RELEASE %s: %v", p, err)
					}
					if err := c.Forget(e.NodeId, 1); err != nil {
						t.Fatalf("FORGET %s: %v", p, err)
					}
				}

				seg, other := counter.segmented.Load(), counter.other.Load()
				if fx.zeroCopy && (seg == 0 || other != 0) {
					t.Errorf("uncompressed image: %d READs zero-copy, %d copied; want all zero-copy", seg, other)
				}
				if !fx.zeroCopy && seg != 0 {
					t.Errorf("compressed image: %d READs claim zero-copy", seg)
				}
				if _, err := c.Create(fuse.FUSE_ROOT_ID, "new", syscall.O_WRONLY|syscall.O_CREAT, 0o644); errnoOf(err) != syscall.EROFS {
					t.Fatalf("CREATE on an image: %v, want EROFS", err)
				}
				g.destroy(c)
			})
		}
	}
}

// walkTree lists dir (node) recursively with READDIRPLUS and records the
// regular files it finds by path.
func walkTree(t *testing.T, c *fuseclient.Client, dir string, node uint64, files map[string]*fuse.EntryOut) {
	t.Helper()
	es, err := readDirPlusAll(c, node, 4096)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range es {
		if de.Name == "." || de.Name == ".." {
			continue
		}
		p := path.Join(dir, de.Name)
		if de.Entry == nil || de.Entry.NodeId == 0 {
			t.Fatalf("READDIRPLUS %s: no entry", p)
		}
		switch de.Entry.Attr.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			files[p] = de.Entry
		case syscall.S_IFDIR:
			walkTree(t, c, p, de.Entry.NodeId, files)
		}
	}
}
