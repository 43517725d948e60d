package backend

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
)

// randomBlob is n reproducible pseudo-random bytes.
func randomBlob(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// checkRanges reads ranges of b (through New's decorators when wrapped)
// and compares them with want.
// (s3rver answers "bytes=0-0" with the whole object, which the backend
// rightly refuses: the ranges here avoid it.)
func checkRanges(t *testing.T, be Backend, id string, want []byte) {
	t.Helper()
	ctx := context.Background()
	b, err := be.Open(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Size() != int64(len(want)) {
		t.Fatalf("size %d, want %d", b.Size(), len(want))
	}
	for _, r := range []struct{ off, n int }{{1, 1}, {0, 4096}, {12345, 1 << 20}, {len(want) - 100, 100}, {0, len(want)}} {
		r.off %= len(want)
		r.n = min(r.n, len(want)-r.off)
		p := make([]byte, r.n)
		n, err := b.ReadAt(ctx, p, int64(r.off))
		if err != nil || n != r.n || !bytes.Equal(p, want[r.off:r.off+r.n]) {
			t.Fatalf("ReadAt(%d, +%d) = %d, %v", r.off, r.n, n, err)
		}
	}
	p := make([]byte, 200)
	n, err := b.ReadAt(ctx, p, int64(len(want)-50))
	if n != 50 || !errors.Is(err, io.EOF) || !bytes.Equal(p[:50], want[len(want)-50:]) {
		t.Fatalf("read past the end = %d, %v", n, err)
	}
	if n, err := b.ReadAt(ctx, p, int64(len(want))); n != 0 || err != io.EOF {
		t.Fatalf("read at the end = %d, %v", n, err)
	}
}

func TestRegistryReal(t *testing.T) {
	data := randomBlob(3<<20+17, 1)
	tests := []struct {
		name string
		o    func(t *testing.T) testsvc.RegistryOptions
	}{
		{"plain", func(*testing.T) testsvc.RegistryOptions { return testsvc.RegistryOptions{} }},
		{"basic", func(*testing.T) testsvc.RegistryOptions { return testsvc.RegistryOptions{Auth: testsvc.AuthBasic} }},
		{"token", func(*testing.T) testsvc.RegistryOptions { return testsvc.RegistryOptions{Auth: testsvc.AuthToken} }},
		{"redirect to s3", func(t *testing.T) testsvc.RegistryOptions {
			return testsvc.RegistryOptions{Auth: testsvc.AuthToken, S3: testsvc.StartS3(t)}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := testsvc.StartRegistry(t, tc.o(t))
			id := reg.PushBlob(t, data)
			cfg := registryTestConfig(reg)
			be, err := New(&cfg, Options{})
			if err != nil {
				t.Fatal(err)
			}
			checkRanges(t, be, id, data)
			if _, err := be.Open(context.Background(), randomID()); !errors.Is(err, ErrNotFound) {
				t.Fatalf("missing blob: %v", err)
			}
			m := be.(MetricsSource).Metrics()
			if m.ReadCount == 0 || m.ReadAmountTotal < uint64(len(data)) || m.BackendType != "registry" {
				t.Errorf("metrics %+v", m)
			}
		})
	}
}

// registryTestConfig is a registry backend config for reg (plain http,
// its credentials), with nydusd's defaults.
func registryTestConfig(reg *testsvc.Registry) BackendConfig {
	cfg := BackendConfig{Type: "registry", Registry: defaultConfig().Backend.Registry}
	r := &cfg.Registry
	r.Scheme, r.Host, r.Repo, r.Auth = "http", reg.Host, reg.Repo, reg.AuthB64()
	return cfg
}

func randomID() string {
	return "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
}
