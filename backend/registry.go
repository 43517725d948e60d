package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/attribute"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/spans"
)

// Registry is nydusd's registry backend: a blob is
// {scheme}://{host}/v2/{repo}/blobs/sha256:{id}, its size comes from a
// HEAD and its bytes from ranged GETs.
type Registry struct {
	cfg       RegistryConfig
	base      string       // .../blobs/sha256:
	direct    *http.Client // to the origin and to redirect targets
	auth      *authState
	proxy     *proxyRoute // nil: no proxy
	mirrors   []*mirror
	redirects sync.Map // blob id -> redirect URL (string)
}

// Options are what a backend takes besides its config.
type Options struct {
	// Getenv reads the environment (IMAGE_PULL_AUTH); nil: no environment.
	Getenv func(string) string
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Log gets every request at debug level and slow or retried reads at
	// warn, never a secret; nil: no logging.
	Log logrus.FieldLogger
}

func (o Options) now() func() time.Time {
	if o.Now != nil {
		return o.Now
	}
	return time.Now
}

// NewRegistry returns a registry backend. IMAGE_PULL_AUTH (through
// o.Getenv) overrides cfg.Auth; registry_token is preloaded as a bearer.
func NewRegistry(cfg RegistryConfig, o Options) (*Registry, error) {
	if o.Getenv != nil {
		if env := o.Getenv("IMAGE_PULL_AUTH"); env != "" {
			cfg.Auth = env
		}
	}
	bc := BackendConfig{Type: "registry", Registry: cfg}
	if err := bc.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	tr, err := newTransport(&cfg.ConnConfig)
	if err != nil {
		return nil, fmt.Errorf("%w: registry: %w", ErrBadConfig, err)
	}
	rt := withLog(tr, o.Log)
	r := &Registry{
		cfg:    cfg,
		base:   cfg.Scheme + "://" + cfg.Host + "/v2/" + strings.Trim(cfg.Repo, "/") + "/blobs/sha256:",
		direct: &http.Client{Transport: rt, CheckRedirect: noRedirect},
	}
	r.auth = &authState{repo: cfg.Repo, client: &http.Client{Transport: rt}, now: o.now(), settle: make(chan struct{}, 1)}
	r.auth.setCreds(cfg.Auth)
	if cfg.RegistryToken != "" {
		r.auth.cur.Store(&authHeader{value: "Bearer " + cfg.RegistryToken})
	}
	if r.proxy, err = newProxyRoute(&cfg.ConnConfig, tr, o); err != nil {
		return nil, err
	}
	for _, m := range cfg.Mirrors {
		mr, err := newMirror(m, cfg.Scheme, r.direct, o.now())
		if err != nil {
			return nil, err
		}
		r.mirrors = append(r.mirrors, mr)
	}
	return r, nil
}

// SetAuth replaces the credentials (base64 user:pass) at runtime, as
// nydusd's PUT /api/v1/config registry_auth does; cached tokens are
// dropped.
func (r *Registry) SetAuth(auth string) error {
	if _, _, err := DecodeAuth(auth); err != nil {
		return fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	r.auth.setCreds(auth)
	return nil
}

// validBlobID reports whether id is 64 lower-case hex digits (it goes
// into a URL).
func validBlobID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Open HEADs the blob for its size.
func (r *Registry) Open(ctx context.Context, id string) (Blob, error) {
	if !validBlobID(id) {
		return nil, fmt.Errorf("registry: invalid blob id %q", short(id))
	}
	return openRanged(ctx, "registry", id, func(ctx context.Context, method, rng string) (*http.Response, error) {
		return r.fetch(ctx, method, id, rng)
	})
}

// fetch runs a blob request and returns the answer once it is neither a
// 401 nor a redirect.
func (r *Registry) fetch(ctx context.Context, method, id, rng string) (*http.Response, error) {
	if method == http.MethodGet {
		if loc, ok := r.redirects.Load(id); ok {
			resp, err := r.plain(ctx, method, loc.(string), rng)
			if err == nil && resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
				return resp, nil
			}
			// An expired signed URL: forget it and ask the registry again.
			if err == nil {
				drain(resp)
			}
			r.redirects.CompareAndDelete(id, loc)
		}
	}
	// The first request runs alone, so that it settles auth for the rest.
	if !r.auth.settled.Load() {
		select {
		case r.auth.settle <- struct{}{}:
			defer func() { <-r.auth.settle }()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	resp, err := r.route(ctx, method, r.base+id, rng)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 500 {
		r.auth.settled.Store(true)
	}
	for hops := 0; isRedirect(resp.StatusCode); hops++ {
		loc, err := r.location(resp)
		// trace: a redirect is an event of the backend request's span.
		if spans.Recording(ctx) {
			spans.Event(ctx, "redirect", attribute.Int("status", resp.StatusCode), attribute.String("host", hostOf(loc)))
		}
		drain(resp)
		if err != nil {
			return nil, err
		}
		if hops >= 5 {
			return nil, errors.New("more than 5 redirects")
		}
		if resp, err = r.plain(ctx, method, loc, rng); err != nil {
			return nil, err
		}
		if method == http.MethodGet && resp.StatusCode/100 == 2 {
			r.redirects.Store(id, loc)
		}
	}
	if resp.StatusCode == http.StatusNotFound {
		drain(resp)
		return nil, fmt.Errorf("%s %s: %w", method, redactURL(resp.Request.URL), ErrNotFound)
	}
	return resp, nil
}

func isRedirect(code int) bool {
	switch code {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// location is the redirect target of resp, rewritten by blob_url_scheme
// and blob_redirected_host.
func (r *Registry) location(resp *http.Response) (string, error) {
	l := resp.Header.Get("Location")
	if l == "" {
		return "", fmt.Errorf("%s %s: HTTP %d without Location", resp.Request.Method, redactURL(resp.Request.URL), resp.StatusCode)
	}
	u, err := resp.Request.URL.Parse(l)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("%s %s: bad redirect location", resp.Request.Method, redactURL(resp.Request.URL))
	}
	if r.cfg.BlobURLScheme != "" {
		u.Scheme = r.cfg.BlobURLScheme
	}
	if r.cfg.BlobRedirectedHost != "" {
		u.Host = r.cfg.BlobRedirectedHost
	}
	return u.String(), nil
}

// plain sends a request that carries only Range: redirect targets get no
// Authorization, ever.
func (r *Registry) plain(ctx context.Context, method, target, rng string) (*http.Response, error) {
	return sendPlain(ctx, r.direct, method, target, rng, nil)
}

// route sends a registry request through the healthy mirrors, then the
// proxy (falling back to the origin as configured), then the origin.
func (r *Registry) route(ctx context.Context, method, target, rng string) (*http.Response, error) {
	for _, m := range r.mirrors {
		if !m.usable(ctx) {
			continue
		}
		resp, err := r.authed(ctx, m.client, method, m.rewrite(target), rng, m.headers)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			m.fail()
			continue
		}
		if resp.StatusCode < 500 {
			return resp, nil
		}
		drain(resp)
	}
	return r.proxy.send(ctx, r.direct, target, func(c *http.Client, target string) (*http.Response, error) {
		return r.authed(ctx, c, method, target, rng, nil)
	})
}

// authed sends a request with the cached Authorization and runs the 401
// flow: resend without Authorization if one was sent, answer the
// challenge, retry, and cache the new header only if the retry got past
// authentication.
func (r *Registry) authed(ctx context.Context, c *http.Client, method, target, rng string, hdr map[string]string) (*http.Response, error) {
	send := func(authz string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, method, target, nil)
		if err != nil {
			return nil, fmt.Errorf("registry request: %w", err)
		}
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		return doRequest(c, req)
	}
	authz := r.auth.header(ctx)
	resp, err := send(authz)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	if authz != "" {
		// Some registries give the right challenge only to a request
		// without credentials.
		drain(resp)
		if resp, err = send(""); err != nil || resp.StatusCode != http.StatusUnauthorized {
			return resp, err
		}
	}
	ch, err := ParseChallenge(resp.Header.Get("WWW-Authenticate"))
	drain(resp)
	if err != nil {
		return nil, &authError{fmt.Sprintf("%s %s: HTTP 401: %v", method, redactURL(resp.Request.URL), err)}
	}
	h, err := r.auth.fromChallenge(ctx, ch)
	if err != nil {
		return nil, err
	}
	if resp, err = send(h.value); err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden:
		drain(resp)
		return nil, &authError{fmt.Sprintf("%s %s: HTTP %d with fresh credentials", method, redactURL(resp.Request.URL), resp.StatusCode)}
	}
	r.auth.cur.Store(h)
	return resp, nil
}

type lastAttemptKey struct{}

// withLastAttempt marks ctx as the last retry of an on-demand read, which
// bypasses the proxy.
func withLastAttempt(ctx context.Context) context.Context {
	return context.WithValue(ctx, lastAttemptKey{}, true)
}

func lastAttempt(ctx context.Context) bool { return ctx.Value(lastAttemptKey{}) != nil }

// health tracks a proxy's or mirror's ping: a ping runs in the
// background when the last one is older than the interval and requests
// keep coming (so an idle backend stops pinging, as nydusd's pause does).
type health struct {
	pingURL  string
	interval time.Duration
	client   *http.Client
	now      func() time.Time
	ok       atomic.Bool
	last     atomic.Int64 // unix ns of the last ping start
	pinging  atomic.Bool
}

func (h *health) check() {
	if h.pingURL == "" {
		return
	}
	now := h.now().UnixNano()
	if now-h.last.Load() < int64(h.interval) || !h.pinging.CompareAndSwap(false, true) {
		return
	}
	h.last.Store(now)
	go func() {
		defer h.pinging.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), max(h.interval, time.Second))
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.pingURL, nil)
		if err != nil {
			h.ok.Store(false)
			return
		}
		resp, err := h.client.Do(req)
		if err != nil {
			h.ok.Store(false)
			return
		}
		drain(resp)
		h.ok.Store(resp.StatusCode < 400)
	}()
}

// proxyRoute is a forward proxy in front of the origin.
type proxyRoute struct {
	cfg    ProxyConfig
	client *http.Client
	health health
}

func newProxyRoute(c *ConnConfig, base *http.Transport, o Options) (*proxyRoute, error) {
	if c.Proxy.URL == "" {
		return nil, nil
	}
	pu, err := url.Parse(c.Proxy.URL)
	if err != nil || pu.Host == "" {
		return nil, fmt.Errorf("%w: proxy url is not a valid URL", ErrBadConfig)
	}
	tr := base.Clone()
	tr.Proxy = http.ProxyURL(pu)
	p := &proxyRoute{cfg: c.Proxy, client: &http.Client{Transport: withLog(tr, o.Log), CheckRedirect: noRedirect}}
	p.health = health{pingURL: c.Proxy.PingURL, interval: time.Duration(max(c.Proxy.CheckInterval, 1)) * time.Second,
		client: &http.Client{Transport: withLog(base, o.Log)}, now: o.now()}
	p.health.ok.Store(true)
	return p, nil
}

// send sends a request (do, to target with client c) through the proxy
// while it is healthy, falling back to the origin (direct) on a transport
// error or a 5xx when fallback is on; while it is unhealthy, to the origin
// with fallback, nowhere without. The last retry of a read bypasses the
// proxy, unless fallback is off (then the origin is never asked). A nil
// proxy sends to the origin.
func (p *proxyRoute) send(ctx context.Context, direct *http.Client, target string, do func(c *http.Client, target string) (*http.Response, error)) (*http.Response, error) {
	if p != nil && !(lastAttempt(ctx) && p.cfg.Fallback) {
		if p.healthy(ctx) {
			resp, err := do(p.client, p.rewrite(target))
			if err == nil && resp.StatusCode < 500 {
				return resp, nil
			}
			if !p.cfg.Fallback || ctx.Err() != nil {
				return resp, err
			}
			if err == nil {
				drain(resp)
			}
		} else if !p.cfg.Fallback {
			return nil, errors.New("proxy is unhealthy and fallback is off")
		}
	}
	return do(direct, target)
}

func (p *proxyRoute) healthy(context.Context) bool {
	p.health.check()
	return p.health.ok.Load()
}

// rewrite sends http:// to the proxy when use_http is set (the proxy then
// speaks TLS to the origin).
func (p *proxyRoute) rewrite(target string) string {
	if p.cfg.UseHTTP {
		if rest, ok := strings.CutPrefix(target, "https://"); ok {
			return "http://" + rest
		}
	}
	return target
}

// mirror is a registry mirror: disabled after failure_limit transport
// errors, enabled again when its ping answers.
type mirror struct {
	host     string // scheme://host[:port]
	headers  map[string]string
	limit    int32
	failures atomic.Int32
	client   *http.Client
	health   health
}

func newMirror(m MirrorConfig, scheme string, c *http.Client, now func() time.Time) (*mirror, error) {
	host := m.Host
	if !strings.Contains(host, "://") {
		host = scheme + "://" + host
	}
	u, err := url.Parse(host)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%w: mirror host is not valid", ErrBadConfig)
	}
	mr := &mirror{host: u.Scheme + "://" + u.Host, headers: m.Headers, limit: int32(m.FailureLimit), client: c}
	if mr.limit <= 0 {
		mr.limit = 5
	}
	ping := m.PingURL
	if ping == "" {
		ping = mr.host + "/v2"
	}
	iv := m.HealthCheckInterval
	if iv <= 0 {
		iv = 5
	}
	mr.health = health{pingURL: ping, interval: time.Duration(iv) * time.Second, client: c, now: now}
	return mr, nil
}

func (m *mirror) usable(context.Context) bool {
	if m.failures.Load() < m.limit {
		return true
	}
	m.health.check()
	if m.health.ok.Load() {
		m.failures.Store(0)
		return true
	}
	return false
}

func (m *mirror) fail() {
	if m.failures.Add(1) == m.limit {
		m.health.ok.Store(false)
		m.health.last.Store(m.health.now().UnixNano()) // ping after the interval
	}
}

func (m *mirror) rewrite(target string) string {
	i := strings.Index(target, "/v2/")
	return m.host + target[i:]
}

// hostOf is the host of a URL, for trace events (never its query, which
// may hold a signature).
func hostOf(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Host
	}
	return ""
}
