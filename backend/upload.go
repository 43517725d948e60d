package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/minio/minio-go/v7"
)

// Uploader stores blobs in a backend, as nydusify convert --backend-type
// does: the converter writes each layer's blob under its id where the
// daemon's backend of the same config later reads it. Registry blobs are
// pushed by the converter itself (go-containerregistry), not here.
type Uploader interface {
	// Has reports whether blob id is stored with exactly size bytes.
	Has(ctx context.Context, id string, size int64) (bool, error)
	// Upload stores size bytes from r as blob id.
	Upload(ctx context.Context, id string, r io.Reader, size int64) error
}

// NewUploader returns the uploader of a localfs, s3 or oss backend config.
func NewUploader(c *BackendConfig, o Options) (Uploader, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	switch c.Type {
	case "localfs":
		if c.LocalFS.Dir == "" {
			return nil, fmt.Errorf("%w: localfs: blobs are stored under dir (blob_file names one blob)", ErrBadConfig)
		}
		return &LocalFS{Dir: c.LocalFS.Dir}, nil
	case "s3":
		return NewS3(c.S3, o)
	case "oss":
		return NewOSS(c.OSS, o)
	}
	return nil, fmt.Errorf("%w: blobs cannot be stored in a %q backend", ErrBadConfig, short(c.Type))
}

// Has reports whether Dir holds blob id with size bytes.
func (l *LocalFS) Has(ctx context.Context, id string, size int64) (bool, error) {
	if !validID(id) {
		return false, fmt.Errorf("localfs: invalid blob id %q", short(id))
	}
	st, err := os.Stat(filepath.Join(l.Dir, id))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("localfs: %w", err)
	}
	return st.Mode().IsRegular() && st.Size() == size, nil
}

// Upload writes blob id into Dir through a temporary file, so a reader
// never sees a partial blob.
func (l *LocalFS) Upload(ctx context.Context, id string, r io.Reader, size int64) error {
	if !validID(id) {
		return fmt.Errorf("localfs: invalid blob id %q", short(id))
	}
	if err := os.MkdirAll(l.Dir, 0o755); err != nil {
		return fmt.Errorf("localfs: %w", err)
	}
	f, err := os.CreateTemp(l.Dir, "."+id+".tmp-*")
	if err != nil {
		return fmt.Errorf("localfs: %w", err)
	}
	defer os.Remove(f.Name())
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = fmt.Errorf("wrote %d bytes, want %d", n, size)
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(l.Dir, id))
	}
	if err != nil {
		return fmt.Errorf("localfs: store blob %s: %w", id, err)
	}
	return ctx.Err()
}

// Has stats the object.
func (s *S3) Has(ctx context.Context, id string, size int64) (bool, error) {
	if !validID(id) {
		return false, fmt.Errorf("s3: invalid blob id %q", short(id))
	}
	key := s.cfg.ObjectPrefix + id
	info, err := s.client.StatObject(ctx, s.cfg.BucketName, key, minio.StatObjectOptions{})
	if err != nil {
		if err = s.s3Err(http.MethodHead, key, err); errors.Is(err, ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	return info.Size == size, nil
}

// Upload puts the object (minio-go splits large blobs into a multipart
// upload). The payload is not hashed into the signature: the blob id is
// its digest already, and streaming signatures are not what every
// S3-compatible server takes.
func (s *S3) Upload(ctx context.Context, id string, r io.Reader, size int64) error {
	if !validID(id) {
		return fmt.Errorf("s3: invalid blob id %q", short(id))
	}
	key := s.cfg.ObjectPrefix + id
	_, err := s.client.Client.PutObject(ctx, s.cfg.BucketName, key, r, size,
		minio.PutObjectOptions{ContentType: "application/octet-stream", DisableContentSha256: true})
	if err != nil {
		return s.s3Err(http.MethodPut, key, err)
	}
	return nil
}

// ossURL is the object URL of blob id.
func (s *OSS) ossURL(id string) (string, error) {
	if !validID(id) || strings.ContainsAny(id, "?#%") {
		return "", fmt.Errorf("oss: invalid blob id %q", short(id))
	}
	return s.cfg.Scheme + "://" + s.cfg.BucketName + "." + s.cfg.Endpoint + "/" + s.object(id), nil
}

// Has HEADs the object.
func (s *OSS) Has(ctx context.Context, id string, size int64) (bool, error) {
	u, err := s.ossURL(id)
	if err != nil {
		return false, err
	}
	resp, err := sendPlain(ctx, s.client, http.MethodHead, u, "", func(req *http.Request) { s.sign(req, s.object(id)) })
	if err != nil {
		return false, fmt.Errorf("oss: HEAD %s: %w", u, err)
	}
	drain(resp)
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return false, nil
	case resp.StatusCode != http.StatusOK:
		return false, fmt.Errorf("oss: %w", &StatusError{Method: http.MethodHead, URL: u, Code: resp.StatusCode})
	}
	return resp.ContentLength == size, nil
}

// Upload PUTs the object in one request (OSS takes up to 5 GiB so).
func (s *OSS) Upload(ctx context.Context, id string, r io.Reader, size int64) error {
	u, err := s.ossURL(id)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, io.NopCloser(r))
	if err != nil {
		return errors.New("oss: bad request URL")
	}
	req.ContentLength = size
	s.sign(req, s.object(id))
	resp, err := doRequest(s.client, req)
	if err != nil {
		return fmt.Errorf("oss: %w", err)
	}
	drain(resp)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("oss: %w", &StatusError{Method: http.MethodPut, URL: u, Code: resp.StatusCode})
	}
	return nil
}
