package testsvc

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TokenIssuerOptions configure StartTokenIssuer.
type TokenIssuerOptions struct {
	User, Pass string // required Basic credentials ("" : anonymous tokens)
	Service    string
	TTL        time.Duration // token lifetime (0: 10 min)
	// RefusePOST answers POST with 405, so that clients fall back to GET.
	RefusePOST bool
}

// TokenIssuer is an in-test token server for distribution's token auth:
// it signs ES256 JWTs with a self-signed certificate's key (the
// registry's rootcertbundle), sent in the x5c header.
type TokenIssuer struct {
	Realm    string // http://127.0.0.1:port/token
	Service  string
	Name     string // the iss claim
	CertFile string

	key     *ecdsa.PrivateKey
	certDER []byte
	o       TokenIssuerOptions
	ttl     atomic.Int64

	mu       sync.Mutex
	requests []string // "POST" or "GET" per token request
}

// StartTokenIssuer starts a token server on a free loopback port.
func StartTokenIssuer(t testing.TB, o TokenIssuerOptions) *TokenIssuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "testsvc token issuer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ti := &TokenIssuer{Realm: "http://" + l.Addr().String() + "/token", Service: o.Service, Name: "testsvc-issuer",
		key: key, certDER: der, o: o}
	ti.SetTTL(o.TTL)
	ti.CertFile = writeFile(t, t.TempDir(), "root.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	srv := &http.Server{Handler: http.HandlerFunc(ti.serve)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return ti
}

// SetTTL changes the lifetime of the tokens issued from now on.
func (ti *TokenIssuer) SetTTL(d time.Duration) {
	if d <= 0 {
		d = 10 * time.Minute
	}
	ti.ttl.Store(int64(d))
}

// Requests returns the methods of the token requests so far.
func (ti *TokenIssuer) Requests() []string {
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return append([]string(nil), ti.requests...)
}

func (ti *TokenIssuer) serve(w http.ResponseWriter, r *http.Request) {
	ti.mu.Lock()
	ti.requests = append(ti.requests, r.Method)
	ti.mu.Unlock()
	if r.Method == http.MethodPost && ti.o.RefusePOST {
		http.Error(w, "POST not supported", http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	if ti.o.User != "" {
		u, p, ok := r.BasicAuth()
		if !ok || u != ti.o.User || p != ti.o.Pass {
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return
		}
	}
	if r.Form.Get("service") != ti.Service {
		http.Error(w, "unknown service", http.StatusBadRequest)
		return
	}
	var repo string
	var actions []string
	for _, s := range r.Form["scope"] {
		// repository:name:actions
		parts := strings.Split(s, ":")
		if len(parts) == 3 && parts[0] == "repository" {
			repo, actions = parts[1], strings.Split(parts[2], ",")
		}
	}
	ttl := time.Duration(ti.ttl.Load())
	tok, err := ti.sign(repo, actions, ttl)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": int(ttl / time.Second), "issued_at": time.Now().UTC().Format(time.RFC3339)})
}

// Sign issues a token for repo with actions directly (what a push uses);
// ttl 0 is the issuer's current TTL.
func (ti *TokenIssuer) Sign(t testing.TB, repo string, actions []string, ttl time.Duration) string {
	t.Helper()
	if ttl == 0 {
		ttl = time.Duration(ti.ttl.Load())
	}
	tok, err := ti.sign(repo, actions, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (ti *TokenIssuer) sign(repo string, actions []string, ttl time.Duration) (string, error) {
	now := time.Now()
	claims := jwt.MapClaims{
		"iss": ti.Name, "sub": ti.o.User, "aud": ti.Service,
		"exp": now.Add(ttl).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(),
		"jti":    base64.RawURLEncoding.EncodeToString(big.NewInt(now.UnixNano()).Bytes()),
		"access": []map[string]any{},
	}
	if repo != "" {
		claims["access"] = []map[string]any{{"type": "repository", "name": repo, "actions": actions}}
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["x5c"] = []string{base64.StdEncoding.EncodeToString(ti.certDER)}
	return tok.SignedString(ti.key)
}

// selfSignedCert writes a certificate for 127.0.0.1 and its key (PEM)
// into dir and returns their paths.
func selfSignedCert(t testing.TB, dir string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert = writeFile(t, dir, "tls.crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	key = writeFile(t, dir, "tls.key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})))
	return cert, key
}
