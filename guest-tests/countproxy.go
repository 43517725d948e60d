package guesttests

import (
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sync"
)

// BlobCounter is a reverse proxy on loopback in front of a registry that
// counts, per blob digest, the bytes of blob GET answers it passed on: how
// much of an image a lazy reader really fetched. The registry behind it
// answers every request; nothing is changed.
type BlobCounter struct {
	Host string // 127.0.0.1:port, to name as the registry's host

	srv   *http.Server
	mu    sync.Mutex
	bytes map[string]int64
	reqs  map[string]int
}

var blobPath = regexp.MustCompile(`^/v2/.+/blobs/sha256:([0-9a-f]{64})$`)

// StartBlobCounter proxies to the registry at upstream (host:port, plain
// HTTP). Close stops it.
func StartBlobCounter(upstream string) (*BlobCounter, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &BlobCounter{Host: ln.Addr().String(), bytes: map[string]int64{}, reqs: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: upstream})
	rp.ModifyResponse = func(resp *http.Response) error {
		m := blobPath.FindStringSubmatch(resp.Request.URL.Path)
		if m == nil || resp.Request.Method != http.MethodGet {
			return nil
		}
		c.mu.Lock()
		c.reqs[m[1]]++
		c.mu.Unlock()
		resp.Body = &countingBody{ReadCloser: resp.Body, add: func(n int) {
			c.mu.Lock()
			c.bytes[m[1]] += int64(n)
			c.mu.Unlock()
		}}
		return nil
	}
	c.srv = &http.Server{Handler: rp}
	go func() { _ = c.srv.Serve(ln) }()
	return c, nil
}

// Bytes returns the bytes sent per blob digest (hex) so far.
func (c *BlobCounter) Bytes() map[string]int64 { return snapshot(&c.mu, c.bytes) }

// Requests returns the blob GETs per digest (hex) so far.
func (c *BlobCounter) Requests() map[string]int { return snapshot(&c.mu, c.reqs) }

func snapshot[V any](mu *sync.Mutex, m map[string]V) map[string]V {
	mu.Lock()
	defer mu.Unlock()
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Close stops the proxy.
func (c *BlobCounter) Close() error { return c.srv.Close() }

type countingBody struct {
	io.ReadCloser
	add func(int)
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.add(n)
	}
	return n, err
}
