package backend

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Challenge is one parsed WWW-Authenticate challenge.
type Challenge struct {
	Scheme string            // lower case: "basic" or "bearer"
	Params map[string]string // keys lower case
}

// ParseChallenge parses the first challenge of a WWW-Authenticate value:
// a scheme, then comma-separated key=value or key="quoted value" pairs.
func ParseChallenge(h string) (Challenge, error) {
	h = strings.TrimSpace(h)
	scheme, rest, _ := strings.Cut(h, " ")
	if scheme == "" || strings.ContainsAny(scheme, "=,\"") {
		return Challenge{}, errors.New("www-authenticate: no scheme")
	}
	c := Challenge{Scheme: strings.ToLower(scheme), Params: map[string]string{}}
	s := rest
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return c, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return c, errors.New("www-authenticate: parameter without value")
		}
		key := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = strings.TrimLeft(s[eq+1:], " \t")
		var val string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				b.WriteByte(s[i])
			}
			if i >= len(s) {
				return c, errors.New("www-authenticate: unterminated quoted value")
			}
			val, s = b.String(), s[i+1:]
		} else {
			end := strings.IndexByte(s, ',')
			if end < 0 {
				end = len(s)
			}
			val, s = strings.TrimSpace(s[:end]), s[end:]
		}
		if _, dup := c.Params[key]; !dup {
			c.Params[key] = val
		}
	}
}

// tokenAnswer is a token server's JSON answer.
type tokenAnswer struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

// ParseTokenAnswer decodes a token server's answer: token, else
// access_token; expires_in defaults to 600 s.
func ParseTokenAnswer(body []byte) (token string, ttl time.Duration, err error) {
	var a tokenAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return "", 0, fmt.Errorf("token answer: %s", jsonErr(err))
	}
	token = a.Token
	if token == "" {
		token = a.AccessToken
	}
	if token == "" {
		return "", 0, errors.New("token answer has neither token nor access_token")
	}
	if strings.ContainsAny(token, "\r\n") {
		return "", 0, errors.New("token answer: token holds a line break")
	}
	ttl = 600 * time.Second
	if a.ExpiresIn > 0 && a.ExpiresIn < 1<<31 {
		ttl = time.Duration(a.ExpiresIn) * time.Second
	}
	return token, ttl, nil
}

// authError is a failure to authenticate (bad credentials, token server
// refusal): retrying the read will not help.
type authError struct{ msg string }

func (e *authError) Error() string { return e.msg }

// authHeader is a cached Authorization value. A bearer one knows its
// challenge (to refresh it) and when it expires.
type authHeader struct {
	value     string
	bearer    bool
	challenge Challenge
	expires   time.Time
	refreshAt time.Time
}

// authState is a registry's credentials and its cached Authorization.
// Credentials can be replaced at runtime; the cache goes with them.
type authState struct {
	repo   string
	client *http.Client // token requests: never through the proxy
	creds  atomic.Pointer[string]
	cur    atomic.Pointer[authHeader]
	now    func() time.Time

	mu      sync.Mutex // one refresh at a time
	useGET  sync.Map   // token host -> true once POST failed there
	backoff time.Duration
	retryAt time.Time
	settle  chan struct{} // a one-slot lock that waits with a context
	settled atomic.Bool
}

func (a *authState) setCreds(auth string) {
	a.creds.Store(&auth)
	a.cur.Store(nil)
}

func (a *authState) basic() string {
	if p := a.creds.Load(); p != nil {
		return *p
	}
	return ""
}

// header returns the cached Authorization value ("" for none), refreshing
// a bearer token that is close to expiring.
func (a *authState) header(ctx context.Context) string {
	h := a.cur.Load()
	if h == nil {
		return ""
	}
	if h.bearer && !h.expires.IsZero() && !a.now().Before(h.refreshAt) {
		a.refresh(ctx, h)
		if h2 := a.cur.Load(); h2 != nil {
			return h2.value
		}
		return ""
	}
	return h.value
}

// refresh fetches a new token for h's challenge ahead of its expiry; on
// failure the old token stays until the registry refuses it, and the next
// try waits 5 s, doubling up to 600 s.
func (a *authState) refresh(ctx context.Context, h *authHeader) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cur.Load() != h || a.now().Before(a.retryAt) {
		return
	}
	nh, err := a.fetchToken(ctx, h.challenge)
	if err != nil {
		if a.backoff == 0 {
			a.backoff = 5 * time.Second
		} else if a.backoff = 2 * a.backoff; a.backoff > 600*time.Second {
			a.backoff = 600 * time.Second
		}
		a.retryAt = a.now().Add(a.backoff)
		return
	}
	a.backoff, a.retryAt = 0, time.Time{}
	a.cur.CompareAndSwap(h, nh)
}

// fromChallenge builds the Authorization answering c.
func (a *authState) fromChallenge(ctx context.Context, c Challenge) (*authHeader, error) {
	switch c.Scheme {
	case "basic":
		b := a.basic()
		if b == "" {
			return nil, &authError{"registry asks for Basic auth and no credentials are configured"}
		}
		return &authHeader{value: "Basic " + b}, nil
	case "bearer":
		return a.fetchToken(ctx, c)
	}
	return nil, &authError{fmt.Sprintf("unsupported auth scheme %q", short(c.Scheme))}
}

const maxTokenBody = 64 << 10

// fetchToken asks c's realm for a token: a POST form first, then a GET
// with the same query (remembered per host once POST failed there).
func (a *authState) fetchToken(ctx context.Context, c Challenge) (*authHeader, error) {
	realm := c.Params["realm"]
	ru, err := url.Parse(realm)
	if err != nil || (ru.Scheme != "http" && ru.Scheme != "https") || ru.Host == "" {
		return nil, &authError{"bearer challenge without a valid realm"}
	}
	if _, ok := c.Params["service"]; !ok {
		return nil, &authError{"bearer challenge without service"}
	}
	form := url.Values{"service": {c.Params["service"]}, "client_id": {"nydus-virtiofsd"}}
	scope := c.Params["scope"]
	if scope == "" {
		scope = "repository:" + a.repo + ":pull"
	}
	form.Set("scope", scope)
	var body []byte
	if _, get := a.useGET.Load(ru.Host); !get {
		body, err = a.tokenRequest(ctx, http.MethodPost, ru, form)
		if err != nil {
			a.useGET.Store(ru.Host, true)
		}
	}
	if body == nil {
		if body, err = a.tokenRequest(ctx, http.MethodGet, ru, form); err != nil {
			return nil, err
		}
	}
	tok, ttl, err := ParseTokenAnswer(body)
	if err != nil {
		return nil, &authError{err.Error()}
	}
	now := a.now()
	early := 20*time.Second + jitter(min(ttl/10, 300*time.Second))
	if early >= ttl {
		early = ttl / 2
	}
	return &authHeader{value: "Bearer " + tok, bearer: true, challenge: c,
		expires: now.Add(ttl), refreshAt: now.Add(ttl - early)}, nil
}

func jitter(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	return rand.N(max)
}

func (a *authState) tokenRequest(ctx context.Context, method string, realm *url.URL, form url.Values) ([]byte, error) {
	u := *realm
	var req *http.Request
	var err error
	if method == http.MethodPost {
		req, err = http.NewRequestWithContext(ctx, method, u.String(), strings.NewReader(form.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	} else {
		q := u.Query()
		for k, v := range form {
			q[k] = v
		}
		u.RawQuery = q.Encode()
		req, err = http.NewRequestWithContext(ctx, method, u.String(), nil)
	}
	if err != nil {
		return nil, &authError{"token request: bad realm"}
	}
	if b := a.basic(); b != "" {
		req.Header.Set("Authorization", "Basic "+b)
	}
	resp, err := doRequest(a.client, req)
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		err := &StatusError{Method: method, URL: redactURL(req.URL), Code: resp.StatusCode}
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			return nil, &authError{"token " + err.Error()}
		}
		return nil, fmt.Errorf("token: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody+1))
	if err != nil {
		return nil, fmt.Errorf("token %s %s: %w", method, redactURL(req.URL), err)
	}
	if len(body) > maxTokenBody {
		return nil, &authError{"token answer larger than 64 KiB"}
	}
	return body, nil
}

// encodeBasic is the base64 user:pass of a registry auth string.
func encodeBasic(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}
