package backend

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
)

// checkUpload stores data as a new blob through up, checks Has before and
// after, and reads the blob back through be.
func checkUpload(t *testing.T, up Uploader, be Backend, data []byte) {
	t.Helper()
	ctx := context.Background()
	id := randomID()
	if ok, err := up.Has(ctx, id, int64(len(data))); err != nil || ok {
		t.Fatalf("Has before upload: %v, %v", ok, err)
	}
	if err := up.Upload(ctx, id, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("upload: %v", err)
	}
	if ok, err := up.Has(ctx, id, int64(len(data))); err != nil || !ok {
		t.Fatalf("Has after upload: %v, %v", ok, err)
	}
	if ok, err := up.Has(ctx, id, int64(len(data))+1); err != nil || ok {
		t.Fatalf("Has with another size: %v, %v", ok, err)
	}
	checkRanges(t, be, id, data)
	if err := up.Upload(ctx, "../x", bytes.NewReader(data), int64(len(data))); err == nil {
		t.Fatal("uploaded a blob id with a slash")
	}
}

// uploaderAndBackend are the uploader and the reading backend of cfg.
func uploaderAndBackend(t *testing.T, cfg BackendConfig) (Uploader, Backend) {
	t.Helper()
	up, err := NewUploader(&cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	be, err := New(&cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return up, be
}

// s3Config is an s3 backend config for the running s3rver, objects under
// nydus/.
func s3Config(s3 *testsvc.S3) BackendConfig {
	cfg := BackendConfig{Type: "s3", S3: defaultConfig().Backend.S3}
	c := &cfg.S3
	c.Scheme, c.Endpoint, c.Region, c.BucketName, c.ObjectPrefix = "http", s3.Endpoint, s3.Region, s3.Bucket, "nydus/"
	c.AccessKeyID, c.AccessKeySecret = s3.AccessKey, s3.SecretKey
	return cfg
}

func TestUploadLocalFS(t *testing.T) {
	up, be := uploaderAndBackend(t, BackendConfig{Type: "localfs", LocalFS: LocalFSConfig{Dir: t.TempDir()}})
	checkUpload(t, up, be, randomBlob(1<<20+7, 31))
	if _, err := NewUploader(&BackendConfig{Type: "registry", Registry: RegistryConfig{Scheme: "http", Host: "h", Repo: "r"}}, Options{}); err == nil {
		t.Fatal("an uploader for the registry backend")
	}
}

// TestUploadS3Real stores blobs in s3rver, one large enough for minio-go's
// multipart upload.
func TestUploadS3Real(t *testing.T) {
	up, be := uploaderAndBackend(t, s3Config(testsvc.StartS3(t)))
	for _, n := range []int{3 << 10, 17<<20 + 5} {
		checkUpload(t, up, be, randomBlob(n, uint64(n)))
	}
}

// TestFakeOSSUpload: no OSS server runs here, so a test server stands in,
// checking each request's OSS header signature and keeping PUT objects.
func TestFakeOSSUpload(t *testing.T) {
	const ak, secret = "LTAIexample", "s3cr3t-oss-key"
	var mu sync.Mutex
	objects := map[string][]byte{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Host, "bkt.oss.example:") || !strings.HasPrefix(r.URL.Path, "/up/") {
			http.Error(w, "wrong bucket or object "+r.Host+r.URL.Path, http.StatusNotFound)
			return
		}
		want := "OSS " + ak + ":" + ossSignature(secret, r.Method, r.Header.Get("Date"), "/bkt"+r.URL.Path)
		if r.Header.Get("Authorization") != want || r.Header.Get("Date") == "" {
			http.Error(w, "SignatureDoesNotMatch", http.StatusForbidden)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if r.Method == http.MethodPut {
			b, err := io.ReadAll(r.Body)
			if err != nil || int64(len(b)) != r.ContentLength {
				http.Error(w, "short body", http.StatusBadRequest)
				return
			}
			objects[r.URL.Path] = b
			return
		}
		b, ok := objects[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	}))
	defer srv.Close()
	cfg := defaultConfig().Backend.OSS
	cfg.Scheme, cfg.Endpoint, cfg.BucketName, cfg.ObjectPrefix = "http", "oss.example:"+srv.URL[strings.LastIndex(srv.URL, ":")+1:], "bkt", "up/"
	cfg.AccessKeyID, cfg.AccessKeySecret = ak, secret
	oss, err := NewOSS(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Listener.Addr().String()
	oss.client.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	checkUpload(t, oss, oss, randomBlob(300<<10, 32))
	cfg.AccessKeySecret = "not-the-s3cr3t"
	bad, _ := NewOSS(cfg, Options{})
	bad.client = oss.client
	err = bad.Upload(context.Background(), randomID(), bytes.NewReader([]byte("x")), 1)
	if err == nil || strings.Contains(err.Error(), "not-the-s3cr3t") {
		t.Fatalf("wrong secret: %v", err)
	}
}
