package testsvc

import (
	"bytes"
	"context"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 is a running S3-compatible server with one bucket: npm's s3rver
// (StartS3), which parses SigV4 requests but accepts any secret, or
// SeaweedFS (StartSeaweedS3), which checks the signatures.
type S3 struct {
	Endpoint  string // 127.0.0.1:port
	Bucket    string
	Region    string
	AccessKey string
	SecretKey string
}

// StartS3 starts s3rver on a free loopback port with an empty bucket.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	bin := need(t, "s3rver")
	port := FreePort(t)
	s := &S3{Endpoint: addr(port), Bucket: "blobs", Region: "us-east-1", AccessKey: "S3RVER", SecretKey: "S3RVER"}
	startProc(t, "s3rver", func() bool { return answers("http://" + s.Endpoint + "/") }, bin,
		"-d", t.TempDir(), "-a", "127.0.0.1", "-p", itoa(port), "--no-vhost-buckets", "--configure-bucket", s.Bucket)
	return s
}

// Put stores data as object key in the bucket.
func (s *S3) Put(t testing.TB, key string, data []byte) {
	t.Helper()
	if _, err := s.client(t).PutObject(context.Background(), s.Bucket, key, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{DisableContentSha256: true}); err != nil {
		t.Fatalf("s3 put %s: %v", key, err)
	}
}

// client is a SigV4 client of the server with its identity.
func (s *S3) client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(s.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Region: s.Region, BucketLookup: minio.BucketLookupPath})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
