package testsvc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// StartSeaweedS3 starts SeaweedFS (`weed server` with its S3 gateway, one
// process: master, volume server, filer and S3 on free loopback ports)
// with one identity and an empty bucket. Unlike s3rver, which accepts a
// request signed with any secret, SeaweedFS checks SigV4 signatures
// against its identities: a test that must prove signing uses this one.
func StartSeaweedS3(t testing.TB) *S3 {
	t.Helper()
	bin := need(t, "weed")
	dir := t.TempDir()
	s := &S3{Bucket: "blobs", Region: "us-east-1", AccessKey: "nydus-ak", SecretKey: "nydus-secret-key"}
	cfg := writeFile(t, dir, "s3.json", fmt.Sprintf(`{"identities":[{"name":"nydus",`+
		`"credentials":[{"accessKey":%q,"secretKey":%q}],"actions":["Admin","Read","Write","List","Tagging"]}]}`,
		s.AccessKey, s.SecretKey))
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	port := func() string { return itoa(FreePort(t)) }
	s3Port := FreePort(t)
	s.Endpoint = addr(s3Port)
	startProc(t, "weed", func() bool { return answers("http://" + s.Endpoint + "/") }, bin, "server",
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir="+data,
		"-master.port="+port(), "-master.port.grpc="+port(), "-master.volumeSizeLimitMB=64",
		"-volume.port="+port(), "-volume.port.grpc="+port(), "-volume.max=8",
		"-filer", "-filer.port="+port(), "-filer.port.grpc="+port(),
		"-s3", "-s3.port="+itoa(s3Port), "-s3.port.grpc="+port(), "-s3.config="+cfg)
	// The gateway answers before the volume server has joined the master:
	// creating the bucket is retried until the cluster takes writes.
	c := s.client(t)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{Region: s.Region})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("seaweedfs: make bucket: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return s
}
