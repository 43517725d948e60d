package storage_test

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
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
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	f.Sync()
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
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

// BenchmarkColdStart is P3: an image of more than 512 MiB in a loopback
// docker-registry behind a forward proxy pacing each answer to 100 MB/s; reading a
// working set of about 8 % of it (a file list) lazily through the blob
// cache, against downloading the whole blob first and serving it from
// localfs; the working set prefetched; warm cache against plain file reads
// of the source tree; and a prefetch_all running during the cold read.
// Reads go through rafs and the storage layer in process (the daemon's
// read path without the FUSE transport). Run with -benchtime 1x.
func BenchmarkColdStart(b *testing.B) {
	work := b.TempDir()
	src := filepath.Join(work, "src")
	files := coldTree(b, src, 600<<20)
	out := filepath.Join(work, "out")
	os.MkdirAll(out, 0o755)
	boot := filepath.Join(out, "image.boot")
	res, err := builder.Build(context.Background(), src, boot, out, builder.Options{Type: builder.DirRafs,
		Compressor: builder.CompressZstd})
	if err != nil {
		b.Fatal(err)
	}
	blobData, err := os.ReadFile(filepath.Join(out, res.BlobID))
	if err != nil {
		b.Fatal(err)
	}
	blobSize := int64(len(blobData))
	reg := testsvc.StartRegistry(b, testsvc.RegistryOptions{})
	reg.SeedBlob(b, res.BlobID, blobData)
	blobData = nil
	pp, proxy := startPacedProxy(b, 100e6)

	// The working set: random files up to 8 % of the tree's bytes.
	var all []string
	var total int64
	for p, s := range files {
		all = append(all, p)
		total += s
	}
	sort.Strings(all)
	r := rand.New(rand.NewSource(1))
	r.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	var set []string
	var wsBytes int64
	for _, p := range all {
		if wsBytes+files[p] > total*8/100 {
			continue
		}
		set = append(set, p)
		wsBytes += files[p]
	}
	sort.Strings(set)
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
		pool := storage.NewPool(quietEntry())
		set := storage.SettingsFromConfig(cfg)
		set.Cache.NoReadAhead = len(noReadAhead) > 0 && noReadAhead[0]
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
