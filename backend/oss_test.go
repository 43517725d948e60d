package backend

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestFakeOSS: no OSS server runs here, so a test server stands in for
// one: it checks the request's URL form (virtual-hosted bucket, object
// prefix) and recomputes the OSS header signature, then serves ranges
// with net/http's own Range handling.
func TestFakeOSS(t *testing.T) {
	data := randomBlob(300<<10, 21)
	id := randomID()
	const ak, secret = "LTAIexample", "s3cr3t-oss-key"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Host, "bkt.oss.example:") || r.URL.Path != "/layers/"+id {
			http.Error(w, "wrong bucket or object "+r.Host+r.URL.Path, http.StatusNotFound)
			return
		}
		want := "OSS " + ak + ":" + ossSignature(secret, r.Method, r.Header.Get("Date"), "/bkt/layers/"+id)
		if r.Header.Get("Authorization") != want || r.Header.Get("Date") == "" {
			http.Error(w, "SignatureDoesNotMatch", http.StatusForbidden)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	cfg := BackendConfig{Type: "oss", OSS: defaultConfig().Backend.OSS}
	o := &cfg.OSS
	o.Scheme, o.Endpoint, o.BucketName, o.ObjectPrefix = "http", "oss.example:"+srv.URL[strings.LastIndex(srv.URL, ":")+1:], "bkt", "layers/"
	o.AccessKeyID, o.AccessKeySecret = ak, secret
	oss, err := NewOSS(*o, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// bkt.oss.example does not resolve: dial the test server instead.
	addr := srv.Listener.Addr().String()
	oss.client.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	checkRanges(t, WithRetry(oss, RetryPolicy{}), id, data)
	o.AccessKeySecret = "not-the-s3cr3t"
	bad, _ := NewOSS(*o, Options{})
	bad.client = oss.client
	if _, err := bad.Open(context.Background(), id); err == nil || strings.Contains(err.Error(), "not-the-s3cr3t") {
		t.Fatalf("wrong secret: %v", err)
	}
}
