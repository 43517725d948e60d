package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 is nydusd's s3 backend: path-style
// {scheme}://{endpoint}/{bucket}/{object_prefix}{blob_id}, SigV4-signed by
// minio-go (anonymous when no keys are configured).
type S3 struct {
	cfg    S3Config
	client minio.Core
}

// NewS3 returns an s3 backend. The endpoint defaults to s3.amazonaws.com.
func NewS3(cfg S3Config, o Options) (*S3, error) {
	bc := BackendConfig{Type: "s3", S3: cfg}
	if err := bc.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = "s3.amazonaws.com"
	}
	tr, err := newTransport(&cfg.ConnConfig)
	if err != nil {
		return nil, fmt.Errorf("%w: s3: %w", ErrBadConfig, err)
	}
	if cfg.Proxy.URL != "" {
		// minio-go owns the requests: the proxy is a plain forward proxy
		// here, without health checks or fallback.
		pu, err := url.Parse(cfg.Proxy.URL)
		if err != nil || pu.Host == "" {
			return nil, fmt.Errorf("%w: s3: proxy url is not a valid URL", ErrBadConfig)
		}
		tr.Proxy = http.ProxyURL(pu)
	}
	var creds *credentials.Credentials
	if cfg.AccessKeyID != "" {
		creds = credentials.NewStaticV4(cfg.AccessKeyID, cfg.AccessKeySecret, "")
	} else {
		creds = credentials.New(&credentials.Static{Value: credentials.Value{SignerType: credentials.SignatureAnonymous}})
	}
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:        creds,
		Secure:       cfg.Scheme == "https",
		Region:       cfg.Region,
		BucketLookup: minio.BucketLookupPath,
		Transport:    withLog(tr, o.Log),
		MaxRetries:   1, // retries are WithRetry's job
	})
	if err != nil {
		return nil, fmt.Errorf("%w: s3: %s", ErrBadConfig, scrub(err, cfg.AccessKeySecret))
	}
	return &S3{cfg: cfg, client: minio.Core{Client: c}}, nil
}

// scrub is err's text with secret cut out (minio-go errors may quote
// request details).
func scrub(err error, secret string) string {
	s := err.Error()
	if secret != "" {
		s = strings.ReplaceAll(s, secret, "<redacted>")
	}
	return s
}

// s3Err turns a minio-go error into ours: 404 is ErrNotFound, other HTTP
// answers are a StatusError (which the retry layer understands).
func (s *S3) s3Err(method, key string, err error) error {
	resp := minio.ToErrorResponse(err)
	u := s.cfg.Scheme + "://" + s.cfg.Endpoint + "/" + s.cfg.BucketName + "/" + key
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.Code == "NoSuchKey":
		return fmt.Errorf("s3: %s %s: %w", method, u, ErrNotFound)
	case resp.StatusCode != 0:
		return fmt.Errorf("s3: %w (%s)", &StatusError{Method: method, URL: u, Code: resp.StatusCode}, short(resp.Code))
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("s3: %s %s: %w", method, u, context.Canceled)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("s3: %s %s: %w", method, u, context.DeadlineExceeded)
	}
	return fmt.Errorf("s3: %s %s: %s", method, u, scrub(err, s.cfg.AccessKeySecret))
}

// Open stats the object for its size.
func (s *S3) Open(ctx context.Context, id string) (Blob, error) {
	if !validID(id) {
		return nil, fmt.Errorf("s3: invalid blob id %q", short(id))
	}
	key := s.cfg.ObjectPrefix + id
	info, err := s.client.StatObject(ctx, s.cfg.BucketName, key, minio.StatObjectOptions{})
	if err != nil {
		return nil, s.s3Err(http.MethodHead, key, err)
	}
	return &rangeBlob{size: info.Size, get: func(ctx context.Context, p []byte, off int64) error {
		var o minio.GetObjectOptions
		if err := o.SetRange(off, off+int64(len(p))-1); err != nil {
			return fmt.Errorf("s3: %w", err)
		}
		body, _, hdr, err := s.client.GetObject(ctx, s.cfg.BucketName, key, o)
		if err != nil {
			return s.s3Err(http.MethodGet, key, err)
		}
		defer body.Close()
		if err := checkContentRange(hdr.Get("Content-Range"), off, len(p)); err != nil {
			return fmt.Errorf("s3: blob %s: %w", id, err)
		}
		if err := readExact(ctx, body, -1, p); err != nil {
			return fmt.Errorf("s3: blob %s [%d,+%d): %w", id, off, len(p), err)
		}
		return nil
	}}, nil
}
