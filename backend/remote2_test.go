package backend

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
)

func TestS3Real(t *testing.T) {
	// (s3rver accepts a wrong secret, so it cannot prove the signature:
	// TestS3SignatureSeaweedFS does.)
	s3ReadBack(t, testsvc.StartS3(t), 2)
}

// s3ReadBack puts a blob into s3's bucket, reads its ranges through the
// s3 backend with s3's keys, checks that a missing blob is ErrNotFound,
// and returns the blob's id.
func s3ReadBack(t *testing.T, s3 *testsvc.S3, seed uint64) string {
	t.Helper()
	data := randomBlob(2<<20+3, seed)
	id := "ab" + randomID()[2:]
	s3.Put(t, "nydus/"+id, data)
	cfg := s3Config(s3)
	be, err := New(&cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkRanges(t, be, id, data)
	if _, err := be.Open(context.Background(), randomID()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing object: %v", err)
	}
	return id
}

// TestS3SignatureSeaweedFS: against an S3 server that checks SigV4
// signatures (SeaweedFS), the configured keys read a blob's ranges, and a
// wrong secret or no keys at all are refused with 403, not taken for a
// missing blob; the secret appears in no error.
func TestS3SignatureSeaweedFS(t *testing.T) {
	s3 := testsvc.StartSeaweedS3(t)
	id := s3ReadBack(t, s3, 5)
	for _, tc := range []struct {
		name       string
		ak, secret string
	}{
		{"wrong secret", s3.AccessKey, "not-" + s3.SecretKey},
		{"unknown key", "someone-else", s3.SecretKey},
		{"anonymous", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := s3Config(s3)
			cfg.S3.AccessKeyID, cfg.S3.AccessKeySecret = tc.ak, tc.secret
			be, err := New(&cfg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = be.Open(context.Background(), id)
			var se *StatusError
			if !errors.As(err, &se) || se.Code != http.StatusForbidden {
				t.Fatalf("open with %s: %v, want a 403", tc.name, err)
			}
			if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
				t.Fatalf("the secret is in the error: %v", err)
			}
		})
	}
}

func TestHTTPProxyReal(t *testing.T) {
	root := t.TempDir()
	data := randomBlob(1<<20+5, 3)
	id := randomID()
	if err := os.WriteFile(filepath.Join(root, id), data, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "nginx.sock")
	ng := testsvc.StartNginx(t, testsvc.NginxOptions{Root: root, Socket: sock})
	for _, addr := range []string{"http://" + ng.Host, sock} {
		t.Run(addr, func(t *testing.T) {
			cfg := BackendConfig{Type: "http-proxy", HTTPProxy: defaultConfig().Backend.HTTPProxy}
			cfg.HTTPProxy.Addr, cfg.HTTPProxy.Path = addr, "/blobs"
			be, err := New(&cfg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			checkRanges(t, be, id, data)
			if _, err := be.Open(context.Background(), "ff"+id[2:]); !errors.Is(err, ErrNotFound) {
				t.Fatalf("missing blob: %v", err)
			}
		})
	}
}

// TestProxyFallback: nginx as the forward proxy (Dragonfly's role) in
// front of a real registry; reads go through it while it is healthy and
// fall back to the origin once it is gone.
func TestProxyFallback(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthBasic})
	data := randomBlob(1<<20, 4)
	id := reg.PushBlob(t, data)
	ng := testsvc.StartNginx(t, testsvc.NginxOptions{ForwardProxy: true})
	mk := func(fallback bool) Backend {
		cfg := BackendConfig{Type: "registry", Registry: defaultConfig().Backend.Registry}
		r := &cfg.Registry
		r.Scheme, r.Host, r.Repo, r.Auth, r.Timeout = "http", reg.Host, reg.Repo, reg.AuthB64(), 2
		r.Proxy = ProxyConfig{URL: "http://" + ng.Host, PingURL: "http://" + ng.Host + "/ping", Fallback: fallback, CheckInterval: 1}
		be, err := New(&cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return be
	}
	be, strict := mk(true), mk(false)
	checkRanges(t, be, id, data)
	checkRanges(t, strict, id, data)
	if n := ng.Requests(); n < 10 {
		t.Fatalf("only %d requests went through the proxy", n)
	}
	ng.Stop()
	checkRanges(t, be, id, data) // transport errors: fallback
	time.Sleep(1100 * time.Millisecond)
	checkRanges(t, be, id, data) // ping failed: origin directly
	b, err := strict.Open(context.Background(), id)
	if err == nil {
		b.Close()
		t.Fatal("read without fallback succeeded with the proxy gone")
	}
}

func TestRegistryAuthFlows(t *testing.T) {
	ctx := context.Background()
	data := randomBlob(64<<10, 5)
	mk := func(t *testing.T, reg *testsvc.Registry, host, auth string) Backend {
		cfg := BackendConfig{Type: "registry", Registry: defaultConfig().Backend.Registry}
		r := &cfg.Registry
		r.Scheme, r.Host, r.Repo, r.Auth = "http", host, reg.Repo, auth
		be, err := New(&cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return be
	}
	t.Run("token GET fallback", func(t *testing.T) {
		reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthToken, TokenRefusePOST: true})
		id := reg.PushBlob(t, data)
		checkRanges(t, mk(t, reg, reg.Host, reg.AuthB64()), id, data)
		if got := reg.Issuer.Requests(); !slices.Equal(got, []string{"POST", "GET"}) {
			t.Errorf("token requests %v, want POST then GET only", got)
		}
	})
	t.Run("runtime credentials", func(t *testing.T) {
		reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthBasic})
		id := reg.PushBlob(t, data)
		be := mk(t, reg, reg.Host, encodeBasic(reg.User, "stale"))
		start := time.Now()
		if _, err := be.Open(ctx, id); err == nil {
			t.Fatal("opened with a wrong password")
		}
		if d := time.Since(start); d > 400*time.Millisecond {
			t.Errorf("an auth failure was retried (%v)", d)
		}
		if err := SetAuth(be, "!!"); !errors.Is(err, ErrBadConfig) {
			t.Fatalf("bad auth accepted: %v", err)
		}
		if err := SetAuth(be, reg.AuthB64()); err != nil {
			t.Fatal(err)
		}
		checkRanges(t, be, id, data)
	})
	t.Run("IMAGE_PULL_AUTH", func(t *testing.T) {
		reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthBasic})
		id := reg.PushBlob(t, data)
		cfg := BackendConfig{Type: "registry", Registry: defaultConfig().Backend.Registry}
		cfg.Registry.Scheme, cfg.Registry.Host, cfg.Registry.Repo, cfg.Registry.Auth = "http", reg.Host, reg.Repo, encodeBasic("x", "y")
		env := map[string]string{"IMAGE_PULL_AUTH": reg.AuthB64()}
		be, err := New(&cfg, Options{Getenv: func(k string) string { return env[k] }})
		if err != nil {
			t.Fatal(err)
		}
		checkRanges(t, be, id, data)
	})
	t.Run("token refreshed before expiry", func(t *testing.T) {
		reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthToken, TokenTTL: 24 * time.Second})
		id := reg.PushBlob(t, data)
		fi := testsvc.StartFaultInjector(t, "http://"+reg.Host)
		be := mk(t, reg, fi.Host, reg.AuthB64())
		checkRanges(t, be, id, data)
		n := len(reg.Issuer.Requests())
		time.Sleep(4500 * time.Millisecond) // refresh due at 24 s - (20 s + up to 2.4 s)
		seen := len(fi.Seen())
		checkRanges(t, be, id, data)
		if len(reg.Issuer.Requests()) != n+1 {
			t.Errorf("token requests %d -> %d, want one refresh", n, len(reg.Issuer.Requests()))
		}
		// checkRanges: one HEAD and 6 GETs, no 401 round trips.
		if d := len(fi.Seen()) - seen; d != 7 {
			t.Errorf("%d requests for 7, a 401 round trip?", d)
		}
	})
	t.Run("registry_token", func(t *testing.T) {
		reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthToken})
		id := reg.PushBlob(t, data)
		cfg := BackendConfig{Type: "registry", Registry: defaultConfig().Backend.Registry}
		cfg.Registry.Scheme, cfg.Registry.Host, cfg.Registry.Repo = "http", reg.Host, reg.Repo
		cfg.Registry.RegistryToken = reg.Issuer.Sign(t, reg.Repo, []string{"pull"}, time.Minute)
		be, err := New(&cfg, Options{})
		if err != nil {
			t.Fatal(err)
		}
		checkRanges(t, be, id, data)
		if got := reg.Issuer.Requests(); len(got) != 0 {
			t.Errorf("token requests %v with a preloaded registry_token", got)
		}
	})
}

// TestFaultInjectorMirror: a mirror that resets every connection is
// disabled after failure_limit errors and reads go to the origin.
func TestFaultInjectorMirror(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{})
	data := randomBlob(64<<10, 6)
	id := reg.PushBlob(t, data)
	mirror := testsvc.StartFaultInjector(t, "http://"+reg.Host)
	cfg := BackendConfig{Type: "registry", Registry: defaultConfig().Backend.Registry}
	r := &cfg.Registry
	r.Scheme, r.Host, r.Repo = "http", reg.Host, reg.Repo
	r.Mirrors = []MirrorConfig{{Host: "http://" + mirror.Host, FailureLimit: 2, HealthCheckInterval: 60}}
	be, err := New(&cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkRanges(t, be, id, data)
	if n := len(mirror.Seen()); n != 7 {
		t.Fatalf("mirror saw %d requests, want all 7", n)
	}
	mirror.Always(testsvc.FaultReset)
	checkRanges(t, be, id, data)
	n := len(mirror.Seen())
	if n < 9 {
		t.Errorf("mirror saw %d requests, want 7 + at least failure_limit", n)
	}
	checkRanges(t, be, id, data)
	if m := len(mirror.Seen()); m != n {
		t.Errorf("disabled mirror still asked: %d -> %d requests", n, m)
	}
}

// TestRegistryTLS: a registry with a self-signed certificate is reached
// with ca_cert_files or skip_verify, and refused without either.
func TestRegistryTLS(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthBasic, TLS: true})
	data := randomBlob(100<<10, 8)
	id := reg.PushBlob(t, data)
	for _, tc := range []struct {
		name string
		edit func(*RegistryConfig)
		ok   bool
	}{
		{"ca_cert_files", func(r *RegistryConfig) { r.CACertFiles = []string{reg.CACert} }, true},
		{"skip_verify", func(r *RegistryConfig) { r.SkipVerify = true }, true},
		{"untrusted", func(*RegistryConfig) {}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := BackendConfig{Type: "registry", Registry: defaultConfig().Backend.Registry}
			cfg.Registry.Host, cfg.Registry.Repo, cfg.Registry.Auth = reg.Host, reg.Repo, reg.AuthB64()
			tc.edit(&cfg.Registry)
			be, err := New(&cfg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.ok {
				checkRanges(t, be, id, data)
				return
			}
			if b, err := be.Open(context.Background(), id); err == nil {
				b.Close()
				t.Fatal("opened a blob over TLS with an untrusted certificate")
			}
		})
	}
}

// TestHTTPProxyThroughProxy: the http-proxy backend honours proxy too
// (an nginx forward proxy in front of an nginx blob server), and falls
// back to the origin when the proxy is gone.
func TestHTTPProxyThroughProxy(t *testing.T) {
	root := t.TempDir()
	data := randomBlob(300<<10, 22)
	id := randomID()
	if err := os.WriteFile(filepath.Join(root, id), data, 0o644); err != nil {
		t.Fatal(err)
	}
	origin := testsvc.StartNginx(t, testsvc.NginxOptions{Root: root})
	fwd := testsvc.StartNginx(t, testsvc.NginxOptions{ForwardProxy: true})
	cfg := BackendConfig{Type: "http-proxy", HTTPProxy: defaultConfig().Backend.HTTPProxy}
	cfg.HTTPProxy.Addr, cfg.HTTPProxy.Path = "http://"+origin.Host, "/blobs"
	cfg.HTTPProxy.Proxy = ProxyConfig{URL: "http://" + fwd.Host, Fallback: true, CheckInterval: 5}
	be, err := New(&cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkRanges(t, be, id, data)
	if fwd.Requests() == 0 {
		t.Fatal("nothing went through the proxy")
	}
	fwd.Stop()
	checkRanges(t, be, id, data)
}

// TestRegistryConcurrentFirstReads: 16 readers start at once on a new
// backend; the first request settles auth alone, so one token serves them
// all.
func TestRegistryConcurrentFirstReads(t *testing.T) {
	reg := testsvc.StartRegistry(t, testsvc.RegistryOptions{Auth: testsvc.AuthToken})
	data := randomBlob(1<<20, 23)
	id := reg.PushBlob(t, data)
	cfg := registryTestConfig(reg)
	be, err := New(&cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 16)
	for i := range 16 {
		go func() {
			b, err := be.Open(context.Background(), id)
			if err != nil {
				errs <- err
				return
			}
			p := make([]byte, 4096)
			off := i * 60000
			if _, err := b.ReadAt(context.Background(), p, int64(off)); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(p, data[off:off+4096]) {
				errs <- errors.New("wrong bytes")
				return
			}
			errs <- nil
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := len(reg.Issuer.Requests()); n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
}
