package backend

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// OSS is nydusd's oss backend (Alibaba Cloud Object Storage): a blob is
// {scheme}://{bucket}.{endpoint}/{object_prefix}{blob_id}, each request
// signed with OSS's header signature ("Authorization: OSS ak:sig" over
// the verb, the Date and the canonical resource). No Go client of OSS is
// as well kept as minio-go is for S3, and the signature is a dozen lines,
// so it is written here.
type OSS struct {
	cfg    OSSConfig
	client *http.Client
	proxy  *proxyRoute // nil: none
	now    func() time.Time
}

// NewOSS returns an oss backend.
func NewOSS(cfg OSSConfig, o Options) (*OSS, error) {
	bc := BackendConfig{Type: "oss", OSS: cfg}
	if err := bc.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	tr, err := newTransport(&cfg.ConnConfig)
	if err != nil {
		return nil, fmt.Errorf("%w: oss: %w", ErrBadConfig, err)
	}
	p, err := newProxyRoute(&cfg.ConnConfig, tr, o)
	if err != nil {
		return nil, err
	}
	return &OSS{cfg: cfg, client: &http.Client{Transport: withLog(tr, o.Log), CheckRedirect: noRedirect}, proxy: p, now: o.now()}, nil
}

// object is the object key of blob id.
func (s *OSS) object(id string) string { return s.cfg.ObjectPrefix + id }

// sign sets Date and Authorization on req for object key.
func (s *OSS) sign(req *http.Request, key string) {
	date := s.now().UTC().Format(http.TimeFormat)
	req.Header.Set("Date", date)
	if s.cfg.AccessKeyID == "" {
		return
	}
	req.Header.Set("Authorization", "OSS "+s.cfg.AccessKeyID+":"+ossSignature(s.cfg.AccessKeySecret, req.Method, date, "/"+s.cfg.BucketName+"/"+key))
}

// ossSignature is base64(HMAC-SHA1(secret, verb\nmd5\ntype\ndate\nresource))
// with no Content-MD5, Content-Type or x-oss- headers.
func ossSignature(secret, method, date, resource string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(method + "\n\n\n" + date + "\n" + resource))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// Open HEADs the object for its size.
func (s *OSS) Open(ctx context.Context, id string) (Blob, error) {
	if !validID(id) || strings.ContainsAny(id, "?#%") {
		return nil, fmt.Errorf("oss: invalid blob id %q", short(id))
	}
	key := s.object(id)
	u := s.cfg.Scheme + "://" + s.cfg.BucketName + "." + s.cfg.Endpoint + "/" + key
	return openRanged(ctx, "oss", id, func(ctx context.Context, method, rng string) (*http.Response, error) {
		return s.proxy.send(ctx, s.client, u, func(c *http.Client, u string) (*http.Response, error) {
			return sendPlain(ctx, c, method, u, rng, func(req *http.Request) { s.sign(req, key) })
		})
	})
}
