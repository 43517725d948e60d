package testsvc

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Auth is how a test registry authenticates clients.
type Auth int

const (
	AuthNone  Auth = iota
	AuthBasic      // htpasswd
	AuthToken      // bearer tokens from an in-test issuer
)

// RegistryOptions configure StartRegistry.
type RegistryOptions struct {
	Auth Auth
	// S3 stores blobs in this S3 server through distribution's S3 driver
	// with redirects on: blob GETs answer 307 to a presigned S3 URL.
	S3 *S3
	// TokenTTL is the lifetime of issued tokens (AuthToken; 0: 10 min).
	TokenTTL time.Duration
	// TLS serves HTTPS with a new self-signed certificate for 127.0.0.1
	// (Registry.CACert is its PEM file).
	TLS bool
	// TokenRefusePOST makes the token issuer refuse POST (clients must
	// fall back to GET).
	TokenRefusePOST bool
}

// Registry is a running docker-registry.
type Registry struct {
	Host   string // 127.0.0.1:port
	Repo   string
	User   string // "" without auth
	Pass   string
	Issuer *TokenIssuer // AuthToken only
	s3     *S3
	root   string // filesystem storage
	scheme string
	// CACert is the PEM certificate of a TLS registry.
	CACert string
	// Log is the registry's output so far.
	Log func() string
}

// AuthB64 is nydusd's auth value: base64 of user:pass.
func (r *Registry) AuthB64() string {
	if r.User == "" {
		return ""
	}
	return base64.StdEncoding.EncodeToString([]byte(r.User + ":" + r.Pass))
}

// StartRegistry starts docker-registry on a free loopback port with a
// config file written for o.
func StartRegistry(t testing.TB, o RegistryOptions) *Registry {
	t.Helper()
	bin := need(t, "docker-registry")
	dir := t.TempDir()
	port := FreePort(t)
	r := &Registry{Host: addr(port), Repo: "test/blobs", s3: o.S3, root: filepath.Join(dir, "data")}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nhttp:\n  addr: %s\n  secret: testsvc-secret\n", r.Host)
	scheme := "http"
	if o.TLS {
		scheme = "https"
		var key string
		r.CACert, key = selfSignedCert(t, dir)
		fmt.Fprintf(&cfg, "  tls:\n    certificate: %s\n    key: %s\n", r.CACert, key)
	}
	if o.S3 != nil {
		fmt.Fprintf(&cfg, "storage:\n  s3:\n    accesskey: %s\n    secretkey: %s\n    region: %s\n    regionendpoint: http://%s\n    bucket: %s\n    secure: false\n    v4auth: true\n    rootdirectory: /registry\n  redirect:\n    disable: false\n",
			o.S3.AccessKey, o.S3.SecretKey, o.S3.Region, o.S3.Endpoint, o.S3.Bucket)
	} else {
		fmt.Fprintf(&cfg, "storage:\n  filesystem:\n    rootdirectory: %s/data\n  redirect:\n    disable: true\n", dir)
	}
	switch o.Auth {
	case AuthBasic:
		r.User, r.Pass = "tester", "s3cret-"+strconv.FormatInt(time.Now().UnixNano(), 36)
		hp := dir + "/htpasswd"
		if out, err := exec.Command(need(t, "htpasswd"), "-Bbc", hp, r.User, r.Pass).CombinedOutput(); err != nil {
			t.Fatalf("htpasswd: %v %s", err, out)
		}
		fmt.Fprintf(&cfg, "auth:\n  htpasswd:\n    realm: testsvc\n    path: %s\n", hp)
	case AuthToken:
		r.User, r.Pass = "tester", "t0ken-"+strconv.FormatInt(time.Now().UnixNano(), 36)
		iss := StartTokenIssuer(t, TokenIssuerOptions{User: r.User, Pass: r.Pass, Service: "testsvc-registry", TTL: o.TokenTTL, RefusePOST: o.TokenRefusePOST})
		r.Issuer = iss
		fmt.Fprintf(&cfg, "auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n",
			iss.Realm, iss.Service, iss.Name, iss.CertFile)
	}
	cfgPath := writeFile(t, dir, "config.yml", cfg.String())
	out := startProc(t, "docker-registry", func() bool { return answers(scheme + "://" + r.Host + "/v2/") }, bin, "serve", cfgPath)
	r.scheme = scheme
	r.Log = out.out.String
	return r
}

// authorize sets the credentials a push needs (a push-scoped token with
// token auth).
func (r *Registry) authorize(t testing.TB, req *http.Request) {
	switch {
	case r.Issuer != nil:
		req.Header.Set("Authorization", "Bearer "+r.Issuer.Sign(t, r.Repo, []string{"pull", "push"}, 0))
	case r.User != "":
		req.SetBasicAuth(r.User, r.Pass)
	}
}

// PushBlob uploads data with the registry's upload API (POST, then PUT
// with the digest) and returns its sha256 as hex.
func (r *Registry) PushBlob(t testing.TB, data []byte) string {
	t.Helper()
	sum := sha256.Sum256(data)
	id := hex.EncodeToString(sum[:])
	if r.s3 != nil {
		// s3rver lacks ListMultipartUploads, which distribution's S3
		// driver needs for uploads: store the blob where the driver keeps
		// it.
		r.SeedBlob(t, id, data)
		return id
	}
	req, _ := http.NewRequest(http.MethodPost, r.scheme+"://"+r.Host+"/v2/"+r.Repo+"/blobs/uploads/", nil)
	r.authorize(t, req)
	hc := r.client()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	drainClose(resp)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: HTTP %d", resp.StatusCode)
	}
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	q := loc.Query()
	q.Set("digest", "sha256:"+id)
	loc.RawQuery = q.Encode()
	req, _ = http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	r.authorize(t, req)
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("finish upload: HTTP %d %s", resp.StatusCode, body)
	}
	return id
}

// SeedBlob stores data as blob id (hex) in the registry's storage
// directly, with the repository's layer link, where distribution keeps
// them: for test images whose blob ids are not the sha256 of the blob
// file (as some nydus fixtures), and for S3 storage. The registry serves
// it as it serves any blob.
func (r *Registry) SeedBlob(t testing.TB, id string, data []byte) {
	t.Helper()
	blob := "docker/registry/v2/blobs/sha256/" + id[:2] + "/" + id + "/data"
	link := "docker/registry/v2/repositories/" + r.Repo + "/_layers/sha256/" + id + "/link"
	if r.s3 != nil {
		r.s3.Put(t, "registry/"+blob, data)
		r.s3.Put(t, "registry/"+link, []byte("sha256:"+id))
		return
	}
	for name, content := range map[string][]byte{blob: data, link: []byte("sha256:" + id)} {
		p := filepath.Join(r.root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// BlobURL is the registry URL of blob id.
func (r *Registry) BlobURL(id string) string {
	return (&url.URL{Scheme: r.scheme, Host: r.Host, Path: "/v2/" + r.Repo + "/blobs/sha256:" + id}).String()
}

func drainClose(resp *http.Response) {
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func itoa(n int) string { return strconv.Itoa(n) }

// client is an HTTP client that trusts the registry's certificate.
func (r *Registry) client() *http.Client {
	if r.CACert == "" {
		return http.DefaultClient
	}
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(r.CACert)
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}
