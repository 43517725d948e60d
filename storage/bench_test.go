package storage_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/pagecache"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/passthrough"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/builder"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
)

// coldTree writes about total bytes of files with a container-like size
// mix (most files small, most bytes in few large ones), three quarters
// random bytes, and returns the files' paths and sizes.
func coldTree(b *testing.B, dir string, total int64) map[string]int64 {
	r := rand.New(rand.NewSource(99))
	files := map[string]int64{}
	var sum int64
	buf := make([]byte, 8<<20)
	r.Read(buf)
	for i := 0; sum < total; i++ {
		var size int64
		switch p := r.Intn(100); {
		case p < 60:
			size = 512 + r.Int63n(16<<10)
		case p < 92:
			size = 16<<10 + r.Int63n(496<<10)
		default:
			size = 1<<20 + r.Int63n(7<<20)
		}
		rel := fmt.Sprintf("usr/lib%d/pkg%d/file%05d", i%13, i%97, i)
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		data := make([]byte, size)
		off := r.Int63n(int64(len(buf)) - size)
		copy(data[:size*3/4], buf[off:])
		if err := os.WriteFile(p, data, 0o644); err != nil {
			b.Fatal(err)
		}
		files["/"+rel] = size
		sum += size
	}
	return files
}

// dropCache evicts a file's pages from the host page cache.
func dropCache(b *testing.B, path string) {
	if err := pagecache.Drop(path, 0, 0); err != nil {
		b.Fatal(err)
	}
}

func dropDir(b *testing.B, dir string) {
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			dropCache(b, p)
		}
		return nil
	})
}

func readSet(b *testing.B, img *rafs.Image, set []string) {
	for _, p := range set {
		if _, err := readFile(img, p); err != nil {
			b.Fatalf("%s: %v", p, err)
		}
	}
}

// readParallel reads set with n readers taking files in turn.
func readParallel(b *testing.B, img *rafs.Image, set []string, n int) {
	next := make(chan string)
	errs := make(chan error, n)
	for range n {
		go func() {
			for p := range next {
				if _, err := readFile(img, p); err != nil {
					errs <- fmt.Errorf("%s: %w", p, err)
					for range next {
					}
					return
				}
			}
			errs <- nil
		}()
	}
	for _, p := range set {
		next <- p
	}
	close(next)
	for range n {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
}

func quietEntry() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// pacedProxy is an HTTP forward proxy that paces each answer's body to a
// byte rate, as a WAN link would. (nginx's limit_rate does not apply to
// the unbuffered proxying testsvc configures.) It also keeps a per-request
// log, for the latency breakdown.
type pacedProxy struct {
	rate float64 // bytes per second, per answer
	tr   *http.Transport

	mu    sync.Mutex
	log   []proxied
	conns int // client connections accepted
}

// proxied is one request the proxy answered: when it arrived, when the
// origin's answer headers came (time to first byte), when its body was
// sent, and its size.
type proxied struct {
	method           string
	start, ttfb, end time.Time
	bytes            int64
}

func (p *pacedProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := proxied{method: r.Method, start: time.Now()}
	defer func() {
		rec.end = time.Now()
		p.mu.Lock()
		p.log = append(p.log, rec)
		p.mu.Unlock()
	}()
	out := r.Clone(r.Context())
	out.RequestURI = ""
	resp, err := p.tr.RoundTrip(out)
	rec.ttfb = time.Now()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	start := time.Now()
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			rec.bytes += int64(n)
			if ahead := time.Duration(float64(rec.bytes)/p.rate*float64(time.Second)) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		if err != nil {
			return
		}
	}
}

// proxyStats sums the proxy's log since mark: GETs and HEADs, client
// connections opened, the mean time to first byte and body time of a GET,
// and the time no request was in flight between the first arrival and
// the last answer (the client's own time: decoding, storing, planning).
type proxyStats struct {
	gets, heads, conns int
	ttfb, body, idle   time.Duration
}

// mark returns where the log and the connection count are now.
func (p *pacedProxy) mark() (int, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.log), p.conns
}

func (p *pacedProxy) stats(logMark, connMark int) proxyStats {
	p.mu.Lock()
	recs := append([]proxied(nil), p.log[logMark:]...)
	st := proxyStats{conns: p.conns - connMark}
	p.mu.Unlock()
	sort.Slice(recs, func(i, j int) bool { return recs[i].start.Before(recs[j].start) })
	var busyTill time.Time
	for _, r := range recs {
		switch r.method {
		case http.MethodHead:
			st.heads++
		case http.MethodGet:
			st.gets++
			st.ttfb += r.ttfb.Sub(r.start)
			st.body += r.end.Sub(r.ttfb)
		}
		if !busyTill.IsZero() && r.start.After(busyTill) {
			st.idle += r.start.Sub(busyTill)
		}
		if r.end.After(busyTill) {
			busyTill = r.end
		}
	}
	if st.gets > 0 {
		st.ttfb /= time.Duration(st.gets)
		st.body /= time.Duration(st.gets)
	}
	return st
}

// startPacedProxy serves a pacedProxy on loopback and returns it and its
// address.
func startPacedProxy(b *testing.B, rate float64) (*pacedProxy, string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	p := &pacedProxy{rate: rate, tr: &http.Transport{MaxIdleConnsPerHost: 16}}
	srv := &http.Server{Handler: p, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			p.mu.Lock()
			p.conns++
			p.mu.Unlock()
		}
	}}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	return p, l.Addr().String()
}

// coldImage writes the benchmarks' 604 MiB tree under a temporary
// directory's src and builds it (v6, zstd) into out: it returns the
// directory, the tree, its files, out, the bootstrap and the build result.
func coldImage(b *testing.B) (work, src string, files map[string]int64, out, boot string, res *builder.Result) {
	work = b.TempDir()
	src = filepath.Join(work, "src")
	files = coldTree(b, src, 600<<20)
	out = filepath.Join(work, "out")
	os.MkdirAll(out, 0o755)
	boot = filepath.Join(out, "image.boot")
	res, err := builder.Build(context.Background(), src, boot, out, builder.Options{Type: builder.DirRafs,
		Compressor: builder.CompressZstd})
	if err != nil {
		b.Fatal(err)
	}
	return work, src, files, out, boot, res
}

// openCached opens the image boot with cfg's backend and cache in a pool
// of its own; the function returned closes all three.
func openCached(b *testing.B, boot string, cfg *backend.Config, noReadAhead bool) (*rafs.Image, *storage.Pool, func()) {
	pool := storage.NewPool(quietEntry())
	set := storage.SettingsFromConfig(cfg)
	set.Cache.NoReadAhead = noReadAhead
	m, release, err := pool.Get(set.Cache)
	if err != nil {
		b.Fatal(err)
	}
	be, err := cfg.NewBackend(backend.Options{Getenv: func(string) string { return "" }})
	if err != nil {
		b.Fatal(err)
	}
	img, err := rafs.Open(boot, rafs.Options{Backend: be, Cache: m, Log: quietEntry()})
	if err != nil {
		b.Fatal(err)
	}
	return img, pool, func() { img.Close(); release(); pool.Close() }
}

// workingSet returns the tree's files in sorted order and their total
// size, and the working set: random files up to 8 % of the tree's bytes,
// sorted, and its size.
func workingSet(files map[string]int64) (all []string, total int64, set []string, wsBytes int64) {
	for p, s := range files {
		all = append(all, p)
		total += s
	}
	sort.Strings(all)
	shuffled := append([]string(nil), all...)
	r := rand.New(rand.NewSource(1))
	r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for _, p := range shuffled {
		if wsBytes+files[p] > total*8/100 {
			continue
		}
		set = append(set, p)
		wsBytes += files[p]
	}
	sort.Strings(set)
	return all, total, set, wsBytes
}

// BenchmarkColdStart is P3: an image of more than 512 MiB in a loopback
// docker-registry behind a forward proxy pacing each answer to 100 MB/s; reading a
// working set of about 8 % of it (a file list) lazily through the blob
// cache, against downloading the whole blob first and serving it from
// localfs; the working set prefetched; warm cache against plain file reads
// of the source tree (one noisy sample: BenchmarkWarmCache is the warm
// cache measurement); and a prefetch_all running during the cold read.
// Reads go through rafs and the storage layer in process (the daemon's
// read path without the FUSE transport). Run with -benchtime 1x.
func BenchmarkColdStart(b *testing.B) {
	work, src, files, out, boot, res := coldImage(b)
	blobData, err := os.ReadFile(filepath.Join(out, res.BlobID))
	if err != nil {
		b.Fatal(err)
	}
	blobSize := int64(len(blobData))
	reg := testsvc.StartRegistry(b, testsvc.RegistryOptions{})
	reg.SeedBlob(b, res.BlobID, blobData)
	blobData = nil
	pp, proxy := startPacedProxy(b, 100e6)

	all, total, set, wsBytes := workingSet(files)
	// A clustered working set, as a program's start-up reads it: every
	// file of one directory tree (usr/lib3, 1/13 of the files), in
	// directory order, laid out together in the blob by the builder.
	var dirSet []string
	var dirBytes int64
	for _, p := range all {
		if strings.HasPrefix(p, "/usr/lib3/") {
			dirSet = append(dirSet, p)
			dirBytes += files[p]
		}
	}
	sort.Strings(dirSet)
	// The stored (compressed) bytes of each set's chunks: the least a
	// lazy read can fetch.
	stored := func(set []string) int64 {
		img, err := rafs.Open(boot, rafs.Options{Log: quietEntry()})
		if err != nil {
			b.Fatal(err)
		}
		defer img.Close()
		var n int64
		for _, p := range set {
			ino := uint64(rafs.RootIno)
			for _, name := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
				in, err := img.Lookup(ino, name)
				if err != nil {
					b.Fatal(err)
				}
				ino = in.Ino
			}
			if err := img.Chunks(context.Background(), ino, func(c rafs.Chunk) error {
				n += int64(c.CompressedSize)
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		}
		return n
	}
	wsStored, dirStored := stored(set), stored(dirSet)
	config := func(cacheDir string, prefetchAll bool) *backend.Config {
		c := fmt.Sprintf(`{"version":2,"backend":{"type":"registry","registry":{"scheme":"http","host":%q,"repo":%q,"timeout":60,`+
			`"proxy":{"url":"http://%s","fallback":false}}},"cache":{"type":"blobcache","filecache":{"work_dir":%q}},`+
			`"rafs":{"prefetch":{"enable":%v,"prefetch_all":%v,"threads":4}}}`, reg.Host, reg.Repo, proxy, cacheDir, prefetchAll, prefetchAll)
		cfg, err := backend.ParseConfig([]byte(c))
		if err != nil {
			b.Fatal(err)
		}
		return cfg
	}
	open := func(cfg *backend.Config, noReadAhead ...bool) (*rafs.Image, *storage.Pool, func()) {
		return openCached(b, boot, cfg, len(noReadAhead) > 0 && noReadAhead[0])
	}
	dropCache(b, boot)
	for range b.N {
		// 2. Download the whole blob through the same proxy, then localfs.
		// First: it also brings the registry's copy into the page cache,
		// so that no lazy run below pays for the registry's disk.
		start := time.Now()
		full := filepath.Join(work, "full")
		os.MkdirAll(full, 0o755)
		pu, _ := url.Parse("http://" + proxy)
		cl := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
		resp, err := cl.Get(reg.BlobURL(res.BlobID))
		if err != nil {
			b.Fatal(err)
		}
		f, _ := os.Create(filepath.Join(full, res.BlobID))
		if _, err := io.Copy(f, resp.Body); err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		f.Close()
		limg, err := rafs.Open(boot, rafs.Options{Backend: backend.NewLocalFS(full), Log: quietEntry()})
		if err != nil {
			b.Fatal(err)
		}
		readSet(b, limg, set)
		fullTime := time.Since(start)
		limg.Close()

		// 1. Cold, lazy, one reader; and 1a. the same without read-ahead
		// and concurrent requests (NoReadAhead: the reader's requests one
		// after another, as before they were added). Run in the order
		// lazy, 1a, 1a, lazy and averaged, so that neither gains from
		// going second.
		cache1 := filepath.Join(work, "cache1")
		var lazy, lazySerial time.Duration
		var fetched, fetchedSerial, requests int64
		var lazyStats proxyStats
		for k, serial := range []bool{false, true, true, false} {
			dir := filepath.Join(work, fmt.Sprintf("cache1-%d", k))
			if k == 3 {
				dir = cache1 // kept for the warm read
			}
			img, pool, done := open(config(dir, false), serial)
			logMark, connMark := pp.mark()
			start := time.Now()
			readSet(b, img, set)
			took := time.Since(start)
			if k == 3 {
				lazyStats = pp.stats(logMark, connMark)
			}
			bm := pool.BackendMetrics()
			done()
			if serial {
				lazySerial += took / 2
				fetchedSerial = int64(bm.ReadAmountTotal)
				os.RemoveAll(dir)
			} else {
				lazy += took / 2
				fetched, requests = int64(bm.ReadAmountTotal), int64(bm.ReadCount)
				if dir != cache1 {
					os.RemoveAll(dir)
				}
			}
		}

		// 1c. Cold, lazy, one reader, the clustered working set.
		cacheDir := filepath.Join(work, "cache1c")
		img, pool, done := open(config(cacheDir, false))
		start = time.Now()
		readSet(b, img, dirSet)
		lazyDir := time.Since(start)
		fetchedDir := int64(pool.BackendMetrics().ReadAmountTotal)
		done()
		os.RemoveAll(cacheDir)

		// 1b. Cold, lazy, eight readers (a container's processes and the
		// guest kernel's readahead read in parallel).
		cache1b := filepath.Join(work, "cache1b")
		img, _, done = open(config(cache1b, false))
		start = time.Now()
		readParallel(b, img, set, 8)
		lazy8 := time.Since(start)
		done()

		// 3. Prefetch of the working set: time until it is cached.
		cache3 := filepath.Join(work, "cache3")
		img, _, done = open(config(cache3, false))
		start = time.Now()
		pf, err := img.StartPrefetch(rafs.PrefetchOptions{Files: set})
		if err != nil {
			b.Fatal(err)
		}
		if err := pf.Wait(context.Background()); err != nil {
			b.Fatal(err)
		}
		prefetched := time.Since(start)
		done()

		// 4. Cold read with a prefetch_all running.
		cache4 := filepath.Join(work, "cache4")
		img, _, done = open(config(cache4, true))
		if _, err := img.StartPrefetch(rafs.PrefetchOptions{All: true}); err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		readSet(b, img, set)
		withPrefetch := time.Since(start)
		done()

		// 5. Warm cache vs plain reads of the source files, page cache
		// dropped for both.
		dropDir(b, cache1)
		img, _, done = open(config(cache1, false))
		start = time.Now()
		readSet(b, img, set)
		warm := time.Since(start)
		done()
		for _, p := range set {
			dropCache(b, filepath.Join(src, p))
		}
		start = time.Now()
		for _, p := range set {
			if _, err := os.ReadFile(filepath.Join(src, p)); err != nil {
				b.Fatal(err)
			}
		}
		plain := time.Since(start)

		b.ReportMetric(float64(blobSize)/(1<<20), "blob-MiB")
		b.ReportMetric(float64(total)/(1<<20), "tree-MiB")
		b.ReportMetric(float64(wsBytes)/(1<<20), "workset-MiB")
		b.ReportMetric(lazy.Seconds(), "lazy-s")
		b.ReportMetric(fullTime.Seconds(), "full-download-s")
		b.ReportMetric(lazy.Seconds()/fullTime.Seconds(), "lazy/full")
		b.ReportMetric(lazy8.Seconds()/fullTime.Seconds(), "lazy8/full")
		b.ReportMetric(float64(dirBytes)/(1<<20), "dirset-MiB")
		b.ReportMetric(lazyDir.Seconds()/fullTime.Seconds(), "lazy-dir/full")
		b.ReportMetric(float64(fetchedDir)/float64(dirBytes), "fetched-dir/dirset")
		b.ReportMetric(float64(fetchedDir)/float64(dirStored), "fetched-dir/dirset-stored")
		b.ReportMetric(float64(fetched)/float64(wsStored), "fetched/workset-stored")
		b.ReportMetric(float64(wsStored)/(1<<20), "workset-stored-MiB")
		b.ReportMetric(lazySerial.Seconds()/fullTime.Seconds(), "lazy-no-readahead/full")
		b.ReportMetric(float64(fetchedSerial)/float64(wsBytes), "fetched-no-readahead/workset")
		b.ReportMetric(float64(requests), "lazy-backend-reads")
		b.ReportMetric(float64(fetched)/float64(wsBytes), "fetched/workset")
		// The lazy read's requests as the proxy saw them (the last lazy run).
		b.ReportMetric(float64(lazyStats.gets), "lazy-GETs")
		b.ReportMetric(float64(lazyStats.heads), "lazy-HEADs")
		b.ReportMetric(float64(lazyStats.conns), "lazy-new-conns")
		b.ReportMetric(float64(lazyStats.ttfb.Microseconds())/1000, "lazy-ttfb-ms")
		b.ReportMetric(float64(lazyStats.body.Microseconds())/1000, "lazy-body-ms")
		b.ReportMetric(lazyStats.idle.Seconds(), "lazy-idle-s")
		b.ReportMetric(prefetched.Seconds(), "prefetch-cached-s")
		b.ReportMetric(withPrefetch.Seconds()/lazy.Seconds(), "with-prefetch-all/lazy")
		b.ReportMetric(warm.Seconds(), "warm-s")
		b.ReportMetric(plain.Seconds(), "plain-s")
		b.ReportMetric(plain.Seconds()/warm.Seconds(), "warm-speed/plain-speed")
		for _, d := range []string{cache1, cache1b, cache3, cache4, full} {
			os.RemoveAll(d)
		}
	}
}

// resident returns how many bytes of the regular files under dir are in
// the host page cache (mincore over a read-only mapping of each file).
func resident(b *testing.B, dir string) int64 {
	var n int64
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
			return nil
		}
		r, err := pagecache.ResidentBytes(p)
		if err != nil {
			b.Fatal(err)
		}
		n += r
		return nil
	})
	return n
}

// ioReadBytes is the bytes this process has caused to be read from block
// devices (read_bytes of /proc/self/io).
func ioReadBytes(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "read_bytes: "); ok {
			var n int64
			fmt.Sscan(v, &n)
			return n
		}
	}
	b.Fatal("no read_bytes in /proc/self/io")
	return 0
}

// fuseReader is the part of a FUSE filesystem a guest's whole-file read
// goes through.
type fuseReader interface {
	Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status
	Forget(nodeid, nlookup uint64)
	Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status
	Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status)
	Release(cancel <-chan struct{}, in *fuse.ReleaseIn)
}

// readThroughFS reads a file as the transport would for a guest: LOOKUP
// of each path component, OPEN, READs of len(buf) bytes until a short
// one, each result copied into buf (preadv of its segments, as into guest
// memory), RELEASE and FORGET. It returns the bytes read.
func readThroughFS(fs fuseReader, path string, buf []byte) (int64, error) {
	ino := uint64(fuse.FUSE_ROOT_ID)
	var looked []uint64
	defer func() {
		for _, n := range looked {
			fs.Forget(n, 1)
		}
	}()
	for _, name := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		var out fuse.EntryOut
		if s := fs.Lookup(nil, &fuse.InHeader{NodeId: ino}, name, &out); !s.Ok() {
			return 0, fmt.Errorf("lookup %s: %v", name, s)
		}
		ino = out.NodeId
		looked = append(looked, ino)
	}
	var oo fuse.OpenOut
	if s := fs.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: ino}, Flags: uint32(os.O_RDONLY)}, &oo); !s.Ok() {
		return 0, fmt.Errorf("open: %v", s)
	}
	defer fs.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: ino}, Fh: oo.Fh})
	var off int64
	for {
		res, s := fs.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: ino}, Fh: oo.Fh, Offset: uint64(off), Size: uint32(len(buf))}, buf)
		if !s.Ok() {
			return off, fmt.Errorf("read at %d: %v", off, s)
		}
		got, s := res.Bytes(buf)
		res.Done()
		if !s.Ok() {
			return off, fmt.Errorf("read at %d: %v", off, s)
		}
		off += int64(len(got))
		if len(got) < len(buf) {
			return off, nil
		}
	}
}

// readPlain reads a file with read(2) in len(buf) pieces.
func readPlain(path string, buf []byte) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	for {
		k, err := f.Read(buf)
		n += int64(k)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchmarkWarmCache is issue 9's warm-cache target: the whole 604 MiB
// tree of BenchmarkColdStart read from a fully filled blob cache through
// rafs.FS (rafs + storage, the daemon's RAFS read path without the
// transport) against the same tree read through passthrough.FS (the
// daemon's passthrough filesystem) over the source directory, with the
// same reader on both sides: every file in sorted order, LOOKUP, OPEN,
// 1 MiB READs copied out of the zero-copy result, RELEASE, FORGET. Plain
// read(2) of the source files with the same buffer is a third column,
// for reference. The page cache of the cache directory and of the source
// tree is dropped (fsync, posix_fadvise DONTNEED, checked with mincore)
// before every read; the three reads alternate, in a rotating order, for
// WARM_ROUNDS rounds (default 5), and the figures are medians. Each side
// also reports the bytes its reads brought from the disk. WARM_HOT=1
// keeps the page cache (the cost of the read paths when cached). Run
// with -benchtime 1x.
func BenchmarkWarmCache(b *testing.B) {
	work, src, files, out, boot, _ := coldImage(b)
	all, total, set, wsBytes := workingSet(files)
	rounds := 5
	if v := os.Getenv("WARM_ROUNDS"); v != "" {
		fmt.Sscan(v, &rounds)
	}
	cacheDir := filepath.Join(work, "cache")
	c := fmt.Sprintf(`{"version":2,"backend":{"type":"localfs","localfs":{"dir":%q}},`+
		`"cache":{"type":"blobcache","filecache":{"work_dir":%q}}}`, out, cacheDir)
	cfg, err := backend.ParseConfig([]byte(c))
	if err != nil {
		b.Fatal(err)
	}
	img, pool, done := openCached(b, boot, cfg, false)
	defer done()
	rfs := rafs.NewFS(img, rafs.FSOptions{})
	pfs, err := passthrough.New(src, passthrough.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer pfs.Close()
	buf := make([]byte, 1<<20)
	readAll := func(list []string, read func(p string) (int64, error)) time.Duration {
		start := time.Now()
		for _, p := range list {
			n, err := read(p)
			if err != nil {
				b.Fatalf("%s: %v", p, err)
			}
			if n != files[p] {
				b.Fatalf("%s: read %d bytes, want %d", p, n, files[p])
			}
		}
		return time.Since(start)
	}
	// The fill: every file read once through the cache.
	fill := readAll(all, func(p string) (int64, error) { return readThroughFS(rfs, p, buf) })
	fetched := pool.BackendMetrics().ReadCount
	hot := os.Getenv("WARM_HOT") != "" // page cache kept: the hot path's cost
	drop := func() int64 {
		if hot {
			return 0
		}
		dropDir(b, cacheDir)
		dropDir(b, src)
		return resident(b, cacheDir) + resident(b, src)
	}
	sides := []struct {
		name string
		read func(p string) (int64, error)
	}{
		{"warm", func(p string) (int64, error) { return readThroughFS(rfs, p, buf) }},
		{"passthrough", func(p string) (int64, error) { return readThroughFS(pfs, p, buf) }},
		{"plain", func(p string) (int64, error) { return readPlain(filepath.Join(src, p), buf) }},
	}
	lists := []struct {
		name   string
		files  []string
		bytes  int64
		rounds int
	}{
		{"tree", all, total, rounds},
		// The working set is an eighth of the tree: three times the
		// rounds.
		{"workset", set, wsBytes, 3 * rounds},
	}
	for range b.N {
		var left int64
		for _, l := range lists {
			times := make([][]time.Duration, len(sides))
			diskBytes := make([]int64, len(sides))
			for k := range l.rounds {
				for j := range sides {
					i := (j + k) % len(sides)
					left = max(left, drop())
					before := ioReadBytes(b)
					times[i] = append(times[i], readAll(l.files, sides[i].read))
					diskBytes[i] += ioReadBytes(b) - before
				}
			}
			for i, s := range sides {
				// Bytes the side's reads brought from the disk, per read,
				// against the list's bytes: read-ahead beyond the files
				// shows here.
				b.ReportMetric(float64(diskBytes[i])/float64(l.rounds)/float64(l.bytes), l.name+"-"+s.name+"-disk/bytes")
			}
			warm, pt, plain := median(times[0]), median(times[1]), median(times[2])
			for i, s := range sides {
				b.Logf("%s %s: %v", l.name, s.name, times[i])
			}
			b.ReportMetric(float64(l.bytes)/(1<<20), l.name+"-MiB")
			b.ReportMetric(float64(len(l.files)), l.name+"-files")
			b.ReportMetric(warm.Seconds(), l.name+"-warm-s")
			b.ReportMetric(pt.Seconds(), l.name+"-passthrough-s")
			b.ReportMetric(plain.Seconds(), l.name+"-plain-s")
			b.ReportMetric(pt.Seconds()/warm.Seconds(), l.name+"-warm/passthrough-speed")
			b.ReportMetric(plain.Seconds()/warm.Seconds(), l.name+"-warm/plain-speed")
			b.ReportMetric(slices.Min(times[1]).Seconds()/slices.Min(times[0]).Seconds(), l.name+"-best-warm/best-passthrough-speed")
		}
		if n := pool.BackendMetrics().ReadCount; n != fetched {
			b.Fatalf("warm reads went to the backend: %d reads after the fill, %d before", n, fetched)
		}
		b.ReportMetric(fill.Seconds(), "fill-s")
		b.ReportMetric(float64(left)/(1<<20), "resident-after-drop-MiB")
	}
	// What the warm reads returned is the tree's content.
	for _, p := range all {
		got, err := readFile(img, p)
		if err != nil {
			b.Fatalf("%s: %v", p, err)
		}
		want, err := os.ReadFile(filepath.Join(src, p))
		if err != nil {
			b.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			b.Fatalf("%s: the warm cache's bytes differ from the source file's", p)
		}
	}
}
