package backend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// StatusError is an HTTP answer a backend did not expect. Its message
// names the method, the host and path (never the query, which may hold a
// signature) and the status.
type StatusError struct {
	Method string
	URL    string // redacted
	Code   int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d", e.Method, e.URL, e.Code)
}

// Temporary reports whether a retry may help (5xx, 408, 429).
func (e *StatusError) Temporary() bool {
	return e.Code >= 500 || e.Code == http.StatusRequestTimeout || e.Code == http.StatusTooManyRequests
}

// ErrShortBody and ErrLongBody mark a ranged answer whose length is not
// the one asked for: such bytes are never returned as data.
var (
	ErrShortBody = errors.New("short body")
	ErrLongBody  = errors.New("body longer than the range asked for")
)

// retryable reports whether err may go away on a new attempt.
func retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrBadConfig) {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Temporary()
	}
	var ae *authError
	return !errors.As(err, &ae)
}

// redactURL drops the user info and the query (signatures, tokens) of u.
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	s := r.String()
	if u.RawQuery != "" {
		s += "?<redacted>"
	}
	return s
}

// doRequest runs req on c and strips the URL query from transport errors
// (net/http quotes the whole URL in them). A transport error keeps only
// its text, so that no errno (ECONNRESET…) reaches the guest: every
// backend failure is EIO there. Context errors stay wrapped.
func doRequest(c *http.Client, req *http.Request) (*http.Response, error) {
	resp, err := c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, fmt.Errorf("%s %s: %w", req.Method, redactURL(req.URL), ctxErr)
		}
		return nil, fmt.Errorf("%s %s: %v", req.Method, redactURL(req.URL), err)
	}
	return resp, nil
}

// newTransport makes the HTTP transport of a remote backend: TLS per
// skip_verify and ca_cert_files, connect_timeout on dialing, no
// environment proxy (nydusd uses only the configured one).
func newTransport(c *ConnConfig) (*http.Transport, error) {
	tc := &tls.Config{InsecureSkipVerify: c.SkipVerify} //nolint:gosec // the config asks for it
	if len(c.CACertFiles) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		for _, f := range c.CACertFiles {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("ca_cert_files: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("ca_cert_files: %s holds no PEM certificate", f)
			}
		}
		tc.RootCAs = pool
	}
	d := &net.Dialer{KeepAlive: 30 * time.Second}
	if c.ConnectTimeout > 0 {
		d.Timeout = time.Duration(c.ConnectTimeout) * time.Second
	}
	return &http.Transport{
		DialContext:         d.DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: d.Timeout,
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}, nil
}

// noRedirect makes a client return 3xx answers instead of following them:
// the backends follow redirects by hand so that no header leaks.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// rangeHeader is the Range header for n bytes at off.
func rangeHeader(off int64, n int) string {
	return "bytes=" + strconv.FormatInt(off, 10) + "-" + strconv.FormatInt(off+int64(n)-1, 10)
}

// readRange copies the answer to a ranged GET of len(p) bytes at off into
// p. Only a 206 whose Content-Range is that range, or a 200 of exactly
// the blob when the range starts at 0 and covers it all, is accepted, and
// the body must be exactly len(p) bytes.
func readRange(ctx context.Context, resp *http.Response, p []byte, off int64) error {
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if err := checkContentRange(resp.Header.Get("Content-Range"), off, len(p)); err != nil {
			return err
		}
	case http.StatusOK:
		if off != 0 || resp.ContentLength != int64(len(p)) {
			return fmt.Errorf("HTTP 200 (not 206) to a range request")
		}
	default:
		return &StatusError{Method: resp.Request.Method, URL: redactURL(resp.Request.URL), Code: resp.StatusCode}
	}
	return readExact(ctx, resp.Body, resp.ContentLength, p)
}

// checkContentRange checks that a 206's Content-Range is n bytes at off.
func checkContentRange(cr string, off int64, n int) error {
	want := "bytes " + strconv.FormatInt(off, 10) + "-" + strconv.FormatInt(off+int64(n)-1, 10) + "/"
	if !strings.HasPrefix(cr, want) {
		return fmt.Errorf("answer is range %q, asked for %s", short(cr), strings.TrimSuffix(want, "/"))
	}
	return nil
}

// readExact fills p from body, which must hold exactly len(p) bytes
// (length is the announced Content-Length, -1 if unknown), reporting the
// bytes filled so far to ctx's progress callback (WithProgress).
func readExact(ctx context.Context, body io.Reader, length int64, p []byte) error {
	if length >= 0 && length != int64(len(p)) {
		return fmt.Errorf("content-length %d, asked for %d bytes: %w", length, len(p), ErrLongBody)
	}
	progress := progressOf(ctx)
	n := 0
	for n < len(p) {
		m, err := body.Read(p[n:])
		n += m
		if m > 0 && progress != nil {
			progress(n)
		}
		if err != nil {
			if n == len(p) && err == io.EOF {
				break
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("%d of %d bytes: %w (%v)", n, len(p), ErrShortBody, err)
		}
	}
	var one [1]byte
	if m, _ := body.Read(one[:]); m > 0 {
		return ErrLongBody
	}
	return nil
}

// drain discards what is left of a body (so the connection can be reused)
// and closes it.
func drain(resp *http.Response) {
	io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}

// sizeFromHead is the blob size of a HEAD answer.
func sizeFromHead(resp *http.Response) (int64, error) {
	defer drain(resp)
	if resp.StatusCode == http.StatusNotFound {
		return 0, fmt.Errorf("HEAD %s: %w", redactURL(resp.Request.URL), ErrNotFound)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, &StatusError{Method: http.MethodHead, URL: redactURL(resp.Request.URL), Code: resp.StatusCode}
	}
	if resp.ContentLength < 0 {
		return 0, fmt.Errorf("HEAD %s: no Content-Length", redactURL(resp.Request.URL))
	}
	return resp.ContentLength, nil
}

// clampRead trims a read of len(p) at off to a blob of size bytes: it
// returns how many bytes to fetch and the error ReadAt must return after
// fetching them (io.EOF when the read runs past the end).
func clampRead(p []byte, off, size int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	if rest := size - off; int64(len(p)) > rest {
		return int(rest), io.EOF
	}
	return len(p), nil
}

// rangeBlob is a blob read by ranged GETs: get fetches len(p) bytes at
// off into p or fails.
type rangeBlob struct {
	size int64
	get  func(ctx context.Context, p []byte, off int64) error
}

func (b *rangeBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, eof := clampRead(p, off, b.size)
	if n == 0 {
		return 0, eof
	}
	if err := b.get(ctx, p[:n], off); err != nil {
		return 0, err
	}
	return n, eof
}

func (b *rangeBlob) Size() int64  { return b.size }
func (b *rangeBlob) Close() error { return nil }

// openRanged opens a blob served over HTTP. send sends one request for
// it: HEAD (rng "") for the size, GET with Range rng for bytes. kind
// prefixes the errors.
func openRanged(ctx context.Context, kind, id string, send func(ctx context.Context, method, rng string) (*http.Response, error)) (Blob, error) {
	resp, err := send(ctx, http.MethodHead, "")
	if err != nil {
		return nil, fmt.Errorf("%s: blob %s: %w", kind, id, err)
	}
	size, err := sizeFromHead(resp)
	if err != nil {
		return nil, fmt.Errorf("%s: blob %s: %w", kind, id, err)
	}
	return &rangeBlob{size: size, get: func(ctx context.Context, p []byte, off int64) error {
		resp, err := send(ctx, http.MethodGet, rangeHeader(off, len(p)))
		if err != nil {
			return fmt.Errorf("%s: blob %s: %w", kind, id, err)
		}
		if err := readRange(ctx, resp, p, off); err != nil {
			return fmt.Errorf("%s: blob %s [%d,+%d): %w", kind, id, off, len(p), err)
		}
		return nil
	}}, nil
}

// sendPlain sends one request to u with an optional Range, after sign
// (nil: none) has set its headers.
func sendPlain(ctx context.Context, c *http.Client, method, u, rng string, sign func(*http.Request)) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, errors.New("bad request URL")
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	if sign != nil {
		sign(req)
	}
	return doRequest(c, req)
}

// logTransport logs every request at debug level: method, URL without
// its query, status or error, duration, and whether it carried
// credentials (never the credentials).
type logTransport struct {
	inner http.RoundTripper
	log   logrus.FieldLogger
}

func withLog(rt http.RoundTripper, log logrus.FieldLogger) http.RoundTripper {
	if log == nil {
		return rt
	}
	return &logTransport{inner: rt, log: log}
}

func (l *logTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := l.inner.RoundTrip(req)
	e := l.log.WithField("method", req.Method).WithField("url", redactURL(req.URL)).
		WithField("auth", req.Header.Get("Authorization") != "").WithField("ms", time.Since(start).Milliseconds())
	if r := req.Header.Get("Range"); r != "" {
		e = e.WithField("range", r)
	}
	if err != nil {
		e.WithField("error", "transport").Debug("backend request failed")
		return nil, err
	}
	e.WithField("status", resp.StatusCode).Debug("backend request")
	return resp, nil
}
