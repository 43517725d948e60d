package storage

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
)

// faultInjector is a backend over blobs in memory that counts what it is
// asked for and injects delays, failures and corruption: the faults the
// real backends cannot be made to produce on demand.
type faultInjector struct {
	blobs map[string][]byte

	reads, bytes atomic.Int64
	delay        time.Duration
	fail         atomic.Bool
	failErr      error // what a failing read returns (nil: a generic error)
	corrupt      atomic.Bool
	// A read whose range reaches past holdFrom (when > 0) waits until
	// hold is closed.
	holdFrom int64
	hold     chan struct{}
	// busy counts reads in progress, peak the most at once.
	busy, peak atomic.Int64
	mu         sync.Mutex
	ranges     [][2]int64
}

func (f *faultInjector) Open(ctx context.Context, id string) (backend.Blob, error) {
	d, ok := f.blobs[id]
	if !ok {
		return nil, fmt.Errorf("fault injector: %s: %w", id, backend.ErrNotFound)
	}
	return &faultBlob{f: f, data: d}, nil
}

type faultBlob struct {
	f    *faultInjector
	data []byte
}

func (b *faultBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	f := b.f
	f.reads.Add(1)
	f.mu.Lock()
	f.ranges = append(f.ranges, [2]int64{off, int64(len(p))})
	f.mu.Unlock()
	nb := f.busy.Add(1)
	defer f.busy.Add(-1)
	for p := f.peak.Load(); nb > p && !f.peak.CompareAndSwap(p, nb); p = f.peak.Load() {
	}
	if f.holdFrom > 0 && off+int64(len(p)) > f.holdFrom {
		select {
		case <-f.hold:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if f.fail.Load() {
		if f.failErr != nil {
			return 0, f.failErr
		}
		return 0, errors.New("fault injector: injected backend failure")
	}
	if off >= int64(len(b.data)) {
		return 0, io.EOF
	}
	n := copy(p, b.data[off:])
	f.bytes.Add(int64(n))
	if f.corrupt.Load() && n > 0 {
		p[0] ^= 0xff
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (b *faultBlob) Size() int64  { return int64(len(b.data)) }
func (b *faultBlob) Close() error { return nil }

// testBlob is an uncompressed blob of n chunks of size cs with sha256
// digests.
type testBlob struct {
	id     string
	data   []byte
	chunks []Chunk
}

func newTestBlob(id string, n int, cs uint32, seed int64) *testBlob {
	r := rand.New(rand.NewSource(seed))
	tb := &testBlob{id: id, data: make([]byte, n*int(cs))}
	r.Read(tb.data)
	for i := range n {
		off := uint64(i) * uint64(cs)
		c := Chunk{Index: uint32(i), CompressedOffset: off, CompressedSize: cs, UncompressedOffset: off,
			UncompressedSize: cs, HasDigest: true, Digest: sha256.Sum256(tb.data[off : off+uint64(cs)])}
		tb.chunks = append(tb.chunks, c)
	}
	return tb
}

func (tb *testBlob) desc() BlobDesc {
	return BlobDesc{ID: tb.id, ChunkCount: uint32(len(tb.chunks)), UncompressedSize: uint64(len(tb.data)),
		CompressedSize: uint64(len(tb.data))}
}

func (tb *testBlob) Chunk(i uint32) (Chunk, bool) {
	if int(i) >= len(tb.chunks) {
		return Chunk{}, false
	}
	return tb.chunks[i], true
}

// identity is the Decoder of uncompressed test chunks with sha256 digests.
type identity struct{}

func (identity) Decode(c *Chunk, raw []byte) ([]byte, error) {
	if c.Verify {
		if err := (identity{}).Verify(c, raw); err != nil {
			return nil, err
		}
	}
	return raw, nil
}

func (identity) Verify(c *Chunk, data []byte) error {
	if sha256.Sum256(data) != c.Digest {
		return fmt.Errorf("chunk %d: digest mismatch", c.Index)
	}
	return nil
}

func quietLog() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// readAll reads chunks through b and returns their bytes in order.
func readAll(t testing.TB, b *Blob, chunks []Chunk) []byte {
	t.Helper()
	locs := make([]Location, len(chunks))
	if err := b.Get(context.Background(), chunks, locs); err != nil {
		t.Fatal(err)
	}
	var out []byte
	for i, l := range locs {
		buf := make([]byte, chunks[i].UncompressedSize)
		if l.Fd >= 0 {
			if err := preadFull(l.Fd, buf, l.Off); err != nil {
				t.Fatal(err)
			}
		} else {
			copy(buf, l.Data)
		}
		out = append(out, buf...)
	}
	return out
}

// openTest opens tb through m, closed when the test ends.
func openTest(t testing.TB, m *Manager, tb *testBlob, be backend.Backend, src ChunkSource) *Blob {
	t.Helper()
	b, err := m.Open(tb.desc(), be, identity{}, src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// waitAhead waits until no background fetch of reads is in flight (by
// taking every token).
func waitAhead(m *Manager) {
	for range maxAhead {
		m.ahead <- struct{}{}
	}
	for range maxFills {
		m.fills <- struct{}{}
	}
	for range maxAhead {
		<-m.ahead
	}
	for range maxFills {
		<-m.fills
	}
}

// readyCount counts tb's cached chunks.
func readyCount(b *Blob, tb *testBlob) int {
	n := 0
	for i := range tb.chunks {
		if b.Ready(uint32(i)) {
			n++
		}
	}
	return n
}
