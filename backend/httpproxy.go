package backend

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// HTTPProxy is nydusd's http-proxy backend: HEAD for a blob's size and
// ranged GETs at {addr}{path}/{blob_id}, over TCP or a unix socket.
//
// Over a unix socket nydusd was seen requesting "/" whatever the blob;
// here the path is {path}/{blob_id} on both, so that one server can hold
// many blobs.
type HTTPProxy struct {
	base   string // scheme://host{path}/
	client *http.Client
	proxy  *proxyRoute // nil: none
}

// NewHTTPProxy returns an http-proxy backend.
func NewHTTPProxy(cfg HTTPProxyConfig, o Options) (*HTTPProxy, error) {
	bc := BackendConfig{Type: "http-proxy", HTTPProxy: cfg}
	if err := bc.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	tr, err := newTransport(&cfg.ConnConfig)
	if err != nil {
		return nil, fmt.Errorf("%w: http-proxy: %w", ErrBadConfig, err)
	}
	base := strings.TrimSuffix(cfg.Addr, "/")
	if !strings.HasPrefix(cfg.Addr, "http://") && !strings.HasPrefix(cfg.Addr, "https://") {
		sock := cfg.Addr
		d := &net.Dialer{Timeout: tr.TLSHandshakeTimeout}
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", sock)
		}
		base = "http://localhost"
	}
	path := strings.Trim(cfg.Path, "/")
	if path != "" {
		path = "/" + path
	}
	p, err := newProxyRoute(&cfg.ConnConfig, tr, o)
	if err != nil {
		return nil, err
	}
	return &HTTPProxy{base: base + path + "/", client: &http.Client{Transport: withLog(tr, o.Log), CheckRedirect: noRedirect}, proxy: p}, nil
}

// Open HEADs the blob for its size.
func (h *HTTPProxy) Open(ctx context.Context, id string) (Blob, error) {
	if !validID(id) || strings.ContainsAny(id, "?#%") {
		return nil, fmt.Errorf("http-proxy: invalid blob id %q", short(id))
	}
	u := h.base + id
	return openRanged(ctx, "http-proxy", id, func(ctx context.Context, method, rng string) (*http.Response, error) {
		return h.proxy.send(ctx, h.client, u, func(c *http.Client, u string) (*http.Response, error) {
			return sendPlain(ctx, c, method, u, rng, nil)
		})
	})
}
