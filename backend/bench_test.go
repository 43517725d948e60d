package backend

import (
	"context"
	"fmt"
	"os/exec"
	"testing"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testenv"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/testsvc"
)

// BenchmarkRegistryRanges reads a 64 MiB blob as 64 ranged GETs of 1 MiB
// from the loopback registry (Basic auth): through New's decorated
// backend, through the bare registry backend (the decorators' cost), and
// with one curl process fetching the same ranges over one connection
// (the reference). Compare MB/s.
func BenchmarkRegistryRanges(b *testing.B) {
	const n, size = 64, 1 << 20
	reg := testsvc.StartRegistry(b, testsvc.RegistryOptions{Auth: testsvc.AuthBasic})
	data := randomBlob(n*size, 11)
	id := reg.PushBlob(b, data)
	cfg := registryTestConfig(reg)
	ctx := context.Background()
	run := func(b *testing.B, be Backend) {
		blob, err := be.Open(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		p := make([]byte, size)
		b.SetBytes(n * size)
		for b.Loop() {
			for i := range n {
				if _, err := blob.ReadAt(ctx, p, int64(i*size)); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("decorated", func(b *testing.B) {
		be, err := New(&cfg, Options{})
		if err != nil {
			b.Fatal(err)
		}
		run(b, be)
	})
	b.Run("bare", func(b *testing.B) {
		be, err := NewRegistry(cfg.Registry, Options{})
		if err != nil {
			b.Fatal(err)
		}
		run(b, be)
	})
	b.Run("curl", func(b *testing.B) {
		curl, err := exec.LookPath("curl")
		if err != nil {
			testenv.Skip(b, "curl is not installed")
		}
		args := []string{"-s", "-f", "-u", reg.User + ":" + reg.Pass}
		for i := range n {
			if i > 0 {
				args = append(args, "-:", "-s", "-f", "-u", reg.User+":"+reg.Pass)
			}
			args = append(args, "-r", fmt.Sprintf("%d-%d", i*size, (i+1)*size-1), "-o", "/dev/null", reg.BlobURL(id))
		}
		b.SetBytes(n * size)
		for b.Loop() {
			if out, err := exec.Command(curl, args...).CombinedOutput(); err != nil {
				b.Fatalf("curl: %v %s", err, out)
			}
		}
	})
}

// memBackend serves one in-memory blob: the decorators' own cost shows
// against it.
type memBackend []byte

func (m memBackend) Open(context.Context, string) (Blob, error) {
	return &rangeBlob{size: int64(len(m)), get: func(_ context.Context, p []byte, off int64) error {
		copy(p, m[off:])
		return nil
	}}, nil
}

// BenchmarkDecorators is the time New's retry (with a per-attempt
// timeout) and metrics layers add to one 4 KiB ReadAt that succeeds,
// against the same read undecorated; compare with a registry round trip
// (BenchmarkRegistry4K).
func BenchmarkDecorators(b *testing.B) {
	ctx := context.Background()
	mem := memBackend(randomBlob(1<<20, 12))
	for _, tc := range []struct {
		name string
		be   Backend
	}{
		{"bare", mem},
		{"decorated", WithMetrics(WithRetry(mem, RetryPolicy{Retries: 2, Timeout: 5e9}), NewMetrics("mem"))},
	} {
		b.Run(tc.name, func(b *testing.B) {
			blob, _ := tc.be.Open(ctx, "x")
			p := make([]byte, 4096)
			for b.Loop() {
				if _, err := blob.ReadAt(ctx, p, 8192); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRegistry4K is one 4 KiB ranged GET from the loopback registry
// (Basic auth), decorated and bare, alternating.
func BenchmarkRegistry4K(b *testing.B) {
	reg := testsvc.StartRegistry(b, testsvc.RegistryOptions{Auth: testsvc.AuthBasic})
	id := reg.PushBlob(b, randomBlob(1<<20, 13))
	cfg := registryTestConfig(reg)
	ctx := context.Background()
	dec, _ := New(&cfg, Options{})
	bare, _ := NewRegistry(cfg.Registry, Options{})
	for _, tc := range []struct {
		name string
		be   Backend
	}{{"decorated", dec}, {"bare", bare}} {
		b.Run(tc.name, func(b *testing.B) {
			blob, err := tc.be.Open(ctx, id)
			if err != nil {
				b.Fatal(err)
			}
			p := make([]byte, 4096)
			for b.Loop() {
				if _, err := blob.ReadAt(ctx, p, 8192); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
