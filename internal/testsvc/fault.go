package testsvc

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fault is what the fault injector does to a data request (a GET with a
// Range header).
type Fault int

const (
	FaultNone Fault = iota
	// Fault5xx answers 503.
	Fault5xx
	// FaultReset closes the connection without an answer.
	FaultReset
	// FaultTruncate sends the upstream headers (with the full
	// Content-Length) and half the body, then closes the connection.
	FaultTruncate
	// FaultOverlong sends the upstream answer plus 16 bytes, chunked.
	FaultOverlong
	// FaultWrongRange asks upstream for the range one byte later.
	FaultWrongRange
	// FaultStall waits (StallFor, or until the client gives up) before
	// answering normally.
	FaultStall
	// FaultUnauthorized forwards the request without its Authorization,
	// so the upstream registry answers its real 401 challenge (what an
	// expired token gets).
	FaultUnauthorized
	// FaultForbidden answers 403 (a signed URL that expired).
	FaultForbidden
)

func (f Fault) String() string {
	return [...]string{"none", "5xx", "reset", "truncate", "overlong", "wrong-range", "stall", "401", "403"}[f]
}

// Recorded is one request the fault injector saw.
type Recorded struct {
	Method, Path, Range string
	Query               bool // had a query string
	Authorization       bool // carried an Authorization header
	Fault               Fault
}

// FaultInjector is a test-owned reverse proxy in front of an HTTP service
// that injects faults into data requests on demand. It is the one fake in
// this package, and exists only to break things.
type FaultInjector struct {
	Host string // 127.0.0.1:port
	// StallFor is how long FaultStall waits (default 30 s).
	StallFor time.Duration

	target *url.URL
	tr     *http.Transport

	mu     sync.Mutex
	queue  []Fault // faults for the next data requests, in order
	always Fault
	seen   []Recorded
}

// StartFaultInjector starts a fault injector on a free loopback port that
// forwards to target (http://host:port).
func StartFaultInjector(t testing.TB, target string) *FaultInjector {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &FaultInjector{Host: l.Addr().String(), StallFor: 30 * time.Second, target: u, tr: &http.Transport{}}
	srv := &http.Server{Handler: f}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close(); f.tr.CloseIdleConnections() })
	return f
}

// Inject queues faults for the next data requests, one each.
func (f *FaultInjector) Inject(faults ...Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue = append(f.queue, faults...)
}

// Always applies fault to every data request until Always(FaultNone).
func (f *FaultInjector) Always(fault Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.always = fault
}

// Seen returns the requests so far.
func (f *FaultInjector) Seen() []Recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Recorded(nil), f.seen...)
}

func (f *FaultInjector) next(r *http.Request) Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	fault := FaultNone
	if r.Method == http.MethodGet && r.Header.Get("Range") != "" {
		fault = f.always
		if len(f.queue) > 0 {
			fault, f.queue = f.queue[0], f.queue[1:]
		}
	}
	f.seen = append(f.seen, Recorded{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range"),
		Query: r.URL.RawQuery != "", Authorization: r.Header.Get("Authorization") != "", Fault: fault})
	return fault
}

func (f *FaultInjector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fault := f.next(r)
	switch fault {
	case Fault5xx:
		http.Error(w, "injected", http.StatusServiceUnavailable)
		return
	case FaultForbidden:
		http.Error(w, "injected", http.StatusForbidden)
		return
	case FaultReset:
		reset(w)
		return
	case FaultStall:
		select {
		case <-r.Context().Done():
			return
		case <-time.After(f.StallFor):
		}
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host, out.Host = f.target.Scheme, f.target.Host, f.target.Host
	switch fault {
	case FaultUnauthorized:
		out.Header.Del("Authorization")
	case FaultWrongRange:
		out.Header.Set("Range", shiftRange(r.Header.Get("Range")))
	}
	resp, err := f.tr.RoundTrip(out)
	if err != nil {
		http.Error(w, "upstream: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	if fault == FaultOverlong {
		w.Header().Del("Content-Length")
	}
	w.WriteHeader(resp.StatusCode)
	switch fault {
	case FaultTruncate:
		io.CopyN(w, resp.Body, max(resp.ContentLength/2, 0))
		abort(w)
	case FaultOverlong:
		io.Copy(w, resp.Body)
		w.Write([]byte("0123456789abcdef"))
	default:
		io.Copy(w, resp.Body)
	}
}

// abort drops the connection.
func abort(w http.ResponseWriter) {
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
	panic(http.ErrAbortHandler)
}

// reset closes the connection with a TCP RST, before any answer.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// shiftRange moves "bytes=a-b" one byte later.
func shiftRange(r string) string {
	a, b, ok := strings.Cut(strings.TrimPrefix(r, "bytes="), "-")
	x, err1 := strconv.ParseInt(a, 10, 64)
	y, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return r
	}
	return fmt.Sprintf("bytes=%d-%d", x+1, y+1)
}
