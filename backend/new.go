package backend

import (
	"fmt"
	"time"
)

// New builds the backend that c names: localfs as is (its blobs are local
// files, handed out for zero-copy reads), remote ones wrapped in retries
// with per-attempt timeouts and in metrics.
func New(c *BackendConfig, o Options) (Backend, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	var (
		b    Backend
		conn *ConnConfig
		err  error
	)
	switch c.Type {
	case "localfs":
		l := c.LocalFS
		return &LocalFS{Dir: l.Dir, AltDirs: l.AltDirs, BlobFile: l.BlobFile}, nil
	case "registry":
		b, err = NewRegistry(c.Registry, o)
		conn = &c.Registry.ConnConfig
	case "oss":
		b, err = NewOSS(c.OSS, o)
		conn = &c.OSS.ConnConfig
	case "s3":
		b, err = NewS3(c.S3, o)
		conn = &c.S3.ConnConfig
	case "http-proxy":
		b, err = NewHTTPProxy(c.HTTPProxy, o)
		conn = &c.HTTPProxy.ConnConfig
	default:
		return nil, fmt.Errorf("%w: unknown backend type %q", ErrBadConfig, short(c.Type))
	}
	if err != nil {
		return nil, err
	}
	p := PolicyFor(conn)
	p.Log = o.Log
	return WithMetrics(WithRetry(b, p), NewMetrics(c.Type)), nil
}

// PolicyFor is the retry policy of a connection config: retry_limit
// retries (at least 2: a transient 5xx must not fail a guest read), 500 ms
// doubling between them, each attempt bounded by timeout.
func PolicyFor(c *ConnConfig) RetryPolicy {
	return RetryPolicy{Retries: max(c.RetryLimit, 2), Backoff: 500 * time.Millisecond,
		Timeout: time.Duration(c.Timeout) * time.Second}
}

// NewBackend builds the backend of a whole config.
func (c *Config) NewBackend(o Options) (Backend, error) { return New(&c.Backend, o) }
