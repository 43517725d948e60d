package backend

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
)

// faultSetup is a token-auth registry behind a fault injector and a
// registry backend pointed at the injector.
type faultSetup struct {
	reg  *testsvc.Registry
	fi   *testsvc.FaultInjector
	be   Backend
	id   string
	data []byte
}

func newFaultSetup(t *testing.T, o testsvc.RegistryOptions, edit func(*RegistryConfig)) *faultSetup {
	reg := testsvc.StartRegistry(t, o)
	fs := &faultSetup{reg: reg, data: randomBlob(2<<20, 7)}
	fs.id = reg.PushBlob(t, fs.data)
	fs.fi = testsvc.StartFaultInjector(t, "http://"+reg.Host)
	cfg := BackendConfig{Type: "registry", Registry: defaultConfig().Backend.Registry}
	r := &cfg.Registry
	r.Scheme, r.Host, r.Repo, r.Auth, r.Timeout, r.RetryLimit = "http", fs.fi.Host, reg.Repo, reg.AuthB64(), 1, 2
	if edit != nil {
		edit(r)
	}
	be, err := New(&cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	fs.be = be
	return fs
}

// secrets are strings that must never show in an error.
func (fs *faultSetup) secrets() []string {
	s := []string{fs.reg.AuthB64(), fs.reg.Pass, "X-Amz-Signature", "X-Amz-Credential"}
	return s
}

func (fs *faultSetup) read(t *testing.T, ctx context.Context, off, n int) error {
	t.Helper()
	b, err := fs.be.Open(ctx, fs.id)
	if err != nil {
		return err
	}
	defer b.Close()
	p := make([]byte, n)
	got, err := b.ReadAt(ctx, p, int64(off))
	if err != nil {
		if got != 0 {
			t.Errorf("failed read returned %d bytes", got)
		}
		for _, s := range fs.secrets() {
			if s != "" && strings.Contains(err.Error(), s) {
				t.Errorf("error shows a secret: %v", err)
			}
		}
		return err
	}
	if got != n || !bytes.Equal(p, fs.data[off:off+n]) {
		t.Fatalf("read %d bytes, wrong data", got)
	}
	return nil
}

func TestFaultInjectorRegistry(t *testing.T) {
	fs := newFaultSetup(t, testsvc.RegistryOptions{Auth: testsvc.AuthToken}, nil)
	fs.fi.StallFor = 5 * time.Second
	ctx := context.Background()
	if err := fs.read(t, ctx, 100, 4096); err != nil {
		t.Fatal(err)
	}
	faults := []testsvc.Fault{testsvc.Fault5xx, testsvc.FaultReset, testsvc.FaultTruncate, testsvc.FaultOverlong,
		testsvc.FaultWrongRange, testsvc.FaultStall, testsvc.FaultUnauthorized}
	for _, f := range faults {
		t.Run("once "+f.String(), func(t *testing.T) {
			before := len(fs.reg.Issuer.Requests())
			fs.fi.Inject(f)
			if err := fs.read(t, ctx, 1000, 64<<10); err != nil {
				t.Fatalf("read after one %s: %v", f, err)
			}
			seen := fs.fi.Seen()
			hit := false
			for _, r := range seen {
				hit = hit || r.Fault == f
			}
			if !hit {
				t.Fatalf("fault %s was not injected", f)
			}
			if f == testsvc.FaultUnauthorized && len(fs.reg.Issuer.Requests()) == before {
				t.Error("no new token after a 401")
			}
		})
	}
	for _, f := range faults[:6] {
		if f == testsvc.FaultStall {
			continue
		}
		t.Run("always "+f.String(), func(t *testing.T) {
			fs.fi.Always(f)
			defer fs.fi.Always(testsvc.FaultNone)
			if err := fs.read(t, ctx, 1000, 64<<10); err == nil {
				t.Fatalf("read succeeded with %s on every request", f)
			}
			fs.fi.Always(testsvc.FaultNone)
			if err := fs.read(t, ctx, 1000, 64<<10); err != nil {
				t.Fatalf("read after recovery: %v", err)
			}
		})
	}
	// A caller that follows the read's progress has every byte of the
	// range when an overlong answer fails: one request, not three.
	t.Run("always overlong, progress followed", func(t *testing.T) {
		fs.fi.Always(testsvc.FaultOverlong)
		defer fs.fi.Always(testsvc.FaultNone)
		before := len(fs.fi.Seen())
		pctx := WithProgress(ctx, func(int) {})
		if err := fs.read(t, pctx, 1000, 64<<10); err != nil {
			t.Fatalf("read with overlong answers, progress followed: %v", err)
		}
		ranged := 0
		for _, r := range fs.fi.Seen()[before:] {
			if r.Range != "" {
				ranged++
			}
		}
		if ranged != 1 {
			t.Errorf("%d ranged requests for one read whose range arrived whole, want 1", ranged)
		}
	})
	t.Run("stall bounded by timeout and retries", func(t *testing.T) {
		fs.fi.Always(testsvc.FaultStall)
		defer fs.fi.Always(testsvc.FaultNone)
		start := time.Now()
		err := fs.read(t, ctx, 0, 4096)
		if err == nil || !strings.Contains(err.Error(), "timed out") {
			t.Fatalf("err = %v", err)
		}
		// 3 attempts of 1 s plus 0.5 + 1 s of backoff.
		if d := time.Since(start); d > 8*time.Second {
			t.Errorf("took %v", d)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		fs.fi.Always(testsvc.FaultStall)
		defer fs.fi.Always(testsvc.FaultNone)
		b, err := fs.be.Open(ctx, fs.id)
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = b.ReadAt(cctx, make([]byte, 10), 0)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
		if d := time.Since(start); d > 700*time.Millisecond {
			t.Errorf("cancelled read took %v", d)
		}
	})
}

// TestFaultInjectorRedirect: the registry redirects blob GETs to S3
// (blob_redirected_host points them at a fault injector in front of it).
// No redirected request carries Authorization; a 403 from the cached
// signed URL drops it and the registry is asked again.
func TestFaultInjectorRedirect(t *testing.T) {
	s3 := testsvc.StartS3(t)
	s3fi := testsvc.StartFaultInjector(t, "http://"+s3.Endpoint)
	fs := newFaultSetup(t, testsvc.RegistryOptions{Auth: testsvc.AuthBasic, S3: s3}, func(r *RegistryConfig) {
		r.BlobRedirectedHost = s3fi.Host
	})
	ctx := context.Background()
	for i := range 3 {
		if err := fs.read(t, ctx, 4096*i+1, 8192); err != nil {
			t.Fatal(err)
		}
	}
	count := func(rs []testsvc.Recorded, method string) (n int) {
		for _, r := range rs {
			if r.Method == method && strings.Contains(r.Path, "/blobs/") {
				n++
			}
		}
		return n
	}
	// Cached: one redirecting GET at the registry, three at S3.
	if g, s := count(fs.fi.Seen(), "GET"), count(s3fi.Seen(), "GET"); g != 1 || s != 3 {
		t.Errorf("registry GETs %d (want 1), S3 GETs %d (want 3)", g, s)
	}
	s3fi.Inject(testsvc.FaultForbidden)
	if err := fs.read(t, ctx, 7, 100); err != nil {
		t.Fatal(err)
	}
	if g := count(fs.fi.Seen(), "GET"); g != 2 {
		t.Errorf("registry GETs after a 403: %d, want 2", g)
	}
	for _, r := range s3fi.Seen() {
		if r.Authorization {
			t.Errorf("redirected request carried Authorization: %+v", r)
		}
		if !r.Query {
			t.Errorf("redirected request without its signed query: %+v", r)
		}
	}
	s3fi.Always(testsvc.FaultForbidden)
	if err := fs.read(t, ctx, 7, 100); err == nil {
		t.Fatal("read succeeded while S3 refuses")
	}
}
