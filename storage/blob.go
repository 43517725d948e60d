package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"golang.org/x/sys/unix"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/internal/pagecache"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/spans"
)

// Chunk is one chunk of a blob as the image describes it.
type Chunk struct {
	// Index is the chunk's number in its blob (its bit in the chunk map).
	Index uint32
	// Where the stored bytes are in the blob, and their size.
	CompressedOffset uint64
	CompressedSize   uint32
	// Where the uncompressed bytes go in .blob.data, and their size.
	UncompressedOffset uint64
	UncompressedSize   uint32
	// Compressed is set when the stored bytes must be decompressed.
	Compressed bool
	// Verify asks for the chunk's digest to be checked (once per process)
	// before its bytes are served.
	Verify bool
	// Digest, HasDigest and CRC32 are for the Decoder's checks.
	Digest    [32]byte
	HasDigest bool
	CRC32     uint32
	Flags     uint32
}

// Location is where a chunk's uncompressed bytes are: in file Fd at Off
// (Fd >= 0, zero copy; the fd stays valid until the Blob is closed), or in
// Data (the whole chunk).
type Location struct {
	Fd   int
	Off  int64
	Data []byte
}

// Decoder turns a chunk's stored bytes into its uncompressed bytes. It is
// the image reader's: storage knows no format, compression or digest.
type Decoder interface {
	// Decode returns c's uncompressed bytes (exactly c.UncompressedSize)
	// from raw, its stored bytes, checked against c's digest when
	// c.Verify. It may return raw itself for an uncompressed chunk.
	Decode(c *Chunk, raw []byte) ([]byte, error)
	// Verify checks uncompressed bytes against c's digest.
	Verify(c *Chunk, data []byte) error
}

// ChunkSource lists a blob's chunks by index, for widening a miss to
// neighbouring chunks.
type ChunkSource interface {
	Chunk(index uint32) (Chunk, bool)
}

// Blob is one mount's handle on a blob. It is safe for concurrent use.
type Blob struct {
	m   *Manager
	e   *entry
	be  backend.Backend
	dec Decoder
	src ChunkSource

	mu     sync.Mutex
	opened backend.Blob
	fileFd int // the backend blob's fd when it is a local file, else -1
	closed bool

	// life is held shared by every operation on the handle (reads,
	// prefetch requests) and exclusively by Close, so that the entry's
	// files are never closed under one.
	life sync.RWMutex
	dead bool // under life

	// bg is the context of the handle's background fetches (the widened
	// part of a miss, read-ahead); Close cancels it first.
	bg     context.Context
	stopBG context.CancelFunc
	// tails counts the background fetches still running. They are started
	// only from within an operation (under life), and Close waits for
	// them after the last operation ended and before closing files; they
	// do not take life themselves, so that a reader waiting for one never
	// holds up a Close that waits for that reader.
	tails sync.WaitGroup
	// seq is the highest chunk index of the last Get plus one (0: none),
	// for spotting a sequential reader.
	seq atomic.Uint32
	// streak counts the sequential Gets in a row.
	streak atomic.Uint32
	// widenedBytes is what this handle fetched beyond what was asked
	// (widened misses, read-ahead); widenedUsed, how much of it reads
	// then asked for. Both halve now and then, so they follow the
	// reader's recent behaviour (widenBudget).
	widenedBytes, widenedUsed atomic.Int64
}

// errClosed is returned by operations on a closed handle.
var errClosed = errors.New("blob handle closed")

// enter starts an operation; false when the handle is closed.
func (b *Blob) enter() bool {
	b.life.RLock()
	if b.dead {
		b.life.RUnlock()
		return false
	}
	return true
}

func (b *Blob) leave() { b.life.RUnlock() }

// ID is the blob's id.
func (b *Blob) ID() string { return b.e.desc.ID }

// Close releases the handle (and the entry, when it was the last one),
// after the operations in progress on it have finished.
func (b *Blob) Close() error {
	b.stopBG()
	b.life.Lock()
	b.dead = true
	b.life.Unlock()
	b.tails.Wait()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	o := b.opened
	b.opened = nil
	b.mu.Unlock()
	var err error
	if o != nil {
		err = o.Close()
	}
	return errors.Join(err, b.m.release(b.e))
}

// backendBlob opens the backend blob on first use; a failed open is
// retried on the next call.
func (b *Blob) backendBlob(ctx context.Context) (backend.Blob, int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, -1, fmt.Errorf("blob %s: closed", b.e.desc.ID)
	}
	if b.opened != nil {
		return b.opened, b.fileFd, nil
	}
	h, err := b.be.Open(ctx, b.e.desc.ID)
	if err != nil {
		return nil, -1, fmt.Errorf("blob %s: %w", b.e.desc.ID, err)
	}
	b.opened, b.fileFd = h, -1
	if fb, ok := h.(backend.FileBlob); ok {
		b.fileFd = int(fb.File().Fd())
	}
	return h, b.fileFd, nil
}

// Size is the backend blob's size. A blob whose every chunk is cached and
// whose size the image states is answered without the backend, so that a
// fully cached image opens with its backend unreachable.
func (b *Blob) Size(ctx context.Context) (int64, error) {
	b.mu.Lock()
	opened := b.opened != nil
	b.mu.Unlock()
	if d := b.e.desc; !opened && b.e.persist && d.CompressedSize > 0 && b.e.allReady() {
		return int64(d.CompressedSize), nil
	}
	h, _, err := b.backendBlob(ctx)
	if err != nil {
		return 0, err
	}
	return h.Size(), nil
}

// ReadRange reads exactly n bytes at off from the backend blob (metadata:
// blob.meta, ToC, digests), counted in the backend metrics.
func (b *Blob) ReadRange(ctx context.Context, off, n uint64) ([]byte, error) {
	if !b.enter() {
		return nil, fmt.Errorf("blob %s: %w", b.e.desc.ID, errClosed)
	}
	defer b.leave()
	h, _, err := b.backendBlob(ctx)
	if err != nil {
		return nil, err
	}
	size := uint64(h.Size())
	if off > size || n > size-off {
		return nil, fmt.Errorf("blob %s: range [%d, +%d) is past the end of the %d-byte blob: %w", b.e.desc.ID, off, n, size, io.ErrUnexpectedEOF)
	}
	buf := make([]byte, n)
	if err := b.readBackend(ctx, h, buf, off); err != nil {
		return nil, err
	}
	return buf, nil
}

func (b *Blob) readBackend(ctx context.Context, h backend.Blob, buf []byte, off uint64) (err error) {
	// trace: the backend request (package spans; no-op unless sampled).
	ctx, span := spans.Start(ctx, "backend.read")
	if span.IsRecording() {
		span.SetAttributes(attribute.String("blob.id", b.e.desc.ID), attribute.Int64("offset", int64(off)), attribute.Int("bytes", len(buf)))
	}
	defer func() { spans.End(span, err) }()
	start := time.Now()
	got, err := h.ReadAt(ctx, buf, int64(off))
	if got == len(buf) {
		b.m.backend.Record(got, time.Since(start), nil)
	} else {
		b.m.backend.Record(got, time.Since(start), io.ErrUnexpectedEOF)
	}
	if got == len(buf) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("blob %s: read [%d, +%d): %w", b.e.desc.ID, off, len(buf), err)
}

// Get finds each chunk's bytes, fetching (merged), checking and storing
// the missing ones first. out must be as long as chunks.
func (b *Blob) Get(ctx context.Context, chunks []Chunk, out []Location) error {
	if !b.enter() {
		return fmt.Errorf("blob %s: %w", b.e.desc.ID, errClosed)
	}
	defer b.leave()
	// trace: the storage read (package spans; no-op unless sampled).
	ctx, span := spans.Start(ctx, "storage.read")
	if span.IsRecording() {
		span.SetAttributes(attribute.String("blob.id", b.e.desc.ID), attribute.Int("chunks", len(chunks)))
	}
	defer span.End()
	e := b.e
	mt := &b.m.metrics
	mt.total.Add(1)
	defer b.readAhead(chunks)
	var missing []int
	for i := range chunks {
		c := &chunks[i]
		if clearBit(e.widened, c.Index) {
			b.widenedUsed.Add(int64(c.CompressedSize))
		}
		if e.isReady(c.Index) {
			if err := b.cached(c, &out[i]); err != nil {
				return err
			}
			continue
		}
		if !e.persist {
			if ok, err := b.direct(ctx, c, &out[i]); ok || err != nil {
				if err != nil {
					return err
				}
				continue
			}
		}
		missing = append(missing, i)
	}
	switch {
	case len(missing) == 0:
		mt.wholeHits.Add(1)
		return nil
	case len(missing) < len(chunks):
		mt.partialHits.Add(1)
	}
	want := make([]Chunk, len(missing))
	for k, i := range missing {
		want[k] = chunks[i]
	}
	locs, err := b.fetch(ctx, want, false)
	if err != nil {
		return err
	}
	for k, i := range missing {
		out[i] = locs[k]
	}
	return nil
}

// cached describes a ready chunk: its place in .blob.data, or, for a
// compressed cache, its decoded bytes. With Verify, a chunk not checked in
// this process is read back and checked once.
func (b *Blob) cached(c *Chunk, loc *Location) error {
	e := b.e
	if e.raw {
		raw := make([]byte, c.CompressedSize)
		if err := preadFull(e.fd, raw, int64(c.CompressedOffset)); err != nil {
			return fmt.Errorf("blob %s: cache read: %w", e.desc.ID, err)
		}
		data, err := b.dec.Decode(c, raw)
		if err != nil {
			return err
		}
		*loc = Location{Fd: -1, Data: data}
		return nil
	}
	if c.Verify && !bit(e.verified, c.Index) {
		data := make([]byte, c.UncompressedSize)
		if err := preadFull(e.fd, data, int64(c.UncompressedOffset)); err != nil {
			return fmt.Errorf("blob %s: cache read: %w", e.desc.ID, err)
		}
		if err := b.dec.Verify(c, data); err != nil {
			return err
		}
		setBit(e.verified, c.Index)
	}
	*loc = Location{Fd: e.fd, Off: int64(c.UncompressedOffset)}
	return nil
}

// WillRead says that chunks (ready or not, in the order a reader will
// want them) are about to be read: the rest of a guest file after a read.
// The cache file is opened POSIX_FADV_RANDOM (see entry.openFiles), so
// the kernel reads exactly what each pread asks for; read-ahead is asked
// for here instead, bounded by what the reader says it will read. The
// ready chunks are probed from the last one back (mincore of each one's
// first page) until one is in the host's page cache; the chunks after it
// are hinted (POSIX_FADV_WILLNEED,
// adjacent ones as one range), which starts their reads and returns. So a
// sequential reader hints each chunk once, and a read whose next chunks
// are cached costs one probe. Chunks not ready are left to the read that
// needs them, which fetches them. Nothing is reported: a hint that fails
// costs only speed.
func (b *Blob) WillRead(chunks []Chunk) {
	e := b.e
	if !e.persist || e.view == nil || len(chunks) == 0 || !b.enter() {
		return
	}
	defer b.leave()
	first, last := -1, -1
	for i := len(chunks) - 1; i >= 0; i-- {
		c := &chunks[i]
		if !e.isReady(c.Index) || c.UncompressedSize == 0 {
			continue
		}
		if pageCached(e.view, c.UncompressedOffset) {
			break
		}
		if last < 0 {
			last = i
		}
		first = i
	}
	if first < 0 {
		return
	}
	var off, end int64 = -1, -1
	for i := first; i <= last; i++ {
		c := &chunks[i]
		if !e.isReady(c.Index) || c.UncompressedSize == 0 {
			continue
		}
		s := int64(c.UncompressedOffset)
		if s != end {
			if off >= 0 {
				_ = unix.Fadvise(e.fd, off, end-off, unix.FADV_WILLNEED)
			}
			off = s
		}
		end = s + int64(c.UncompressedSize)
	}
	_ = unix.Fadvise(e.fd, off, end-off, unix.FADV_WILLNEED)
	b.m.metrics.readAheadHints.Add(1)
}

// pageCached reports whether the page of the mapped file view holding
// byte off is in the page cache (mincore(2), which reads nothing: a read
// with RWF_NOWAIT would start reading the page it finds missing). A
// failure counts as cached: nothing is hinted.
func pageCached(view []byte, off uint64) bool {
	page := uint64(os.Getpagesize())
	if off >= uint64(len(view)) {
		return true
	}
	start := off &^ (page - 1)
	var vec [1]byte
	if err := pagecache.InCore(view[start:min(start+page, uint64(len(view)))], vec[:]); err != nil {
		return true
	}
	return vec[0]&1 != 0
}

// direct serves an uncompressed chunk straight from a backend blob that is
// a local file when nothing is cached (ok false: fetch it instead).
func (b *Blob) direct(ctx context.Context, c *Chunk, loc *Location) (bool, error) {
	if c.Compressed || c.CompressedSize != c.UncompressedSize {
		return false, nil
	}
	h, fd, err := b.backendBlob(ctx)
	if err != nil {
		return false, err
	}
	if fd < 0 || c.CompressedOffset+uint64(c.CompressedSize) > uint64(h.Size()) {
		return false, nil
	}
	if c.Verify && !bit(b.e.verified, c.Index) {
		return false, nil // fetched, checked and marked below, then served from the file
	}
	*loc = Location{Fd: fd, Off: int64(c.CompressedOffset)}
	return true, nil
}

func preadFull(fd int, p []byte, off int64) error {
	for done := 0; done < len(p); {
		n, err := unix.Pread(fd, p[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		done += n
	}
	return nil
}

// maxGap is the largest run of unwanted bytes read to merge two chunks
// into one backend request.
const maxGap = 32 << 10

// fetch gets chunks that were not ready: it claims those nobody is
// fetching (plus neighbours, for reads), fetches them in merged runs,
// and waits for the rest.
func (b *Blob) fetch(ctx context.Context, want []Chunk, prefetch bool) ([]Location, error) {
	e := b.e
	out := make([]Location, len(want))
	for attempt := 0; ; attempt++ {
		mine, waits := b.claim(want, prefetch)
		if len(mine) > 0 {
			b.fetchRuns(ctx, mine, prefetch, !prefetch)
		}
		retry := false
		for k := range want {
			f := waits[k]
			if f == nil {
				if e.isReady(want[k].Index) && out[k].Data == nil {
					if err := b.cached(&want[k], &out[k]); err != nil {
						return nil, err
					}
				}
				continue
			}
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			switch {
			case f.err != nil && f.abandoned && ctx.Err() == nil:
				retry = true // the fetcher's request went away, not the backend
			case f.err != nil:
				return nil, f.err
			case f.stored:
				if err := b.cached(&want[k], &out[k]); err != nil {
					return nil, err
				}
			default:
				out[k] = Location{Fd: -1, Data: f.data}
			}
		}
		if !retry || attempt > 3 {
			if retry {
				return nil, fmt.Errorf("blob %s: fetch abandoned: %w", e.desc.ID, context.Canceled)
			}
			return out, nil
		}
	}
}

// claimed is a chunk this caller fetches, with the flight others wait on.
type claimed struct {
	c Chunk
	f *flight
}

// claim splits want into the chunks this caller fetches (with their flights
// registered) and flights to wait for (waits[k] for want[k], nil when the
// chunk is ready or claimed here). Without a persistent cache nothing is
// shared: everything is claimed privately. A read's miss is widened to
// the missing chunks that follow it (amplify_io).
func (b *Blob) claim(want []Chunk, prefetch bool) (mine []claimed, waits []*flight) {
	e := b.e
	waits = make([]*flight, len(want))
	if !e.persist {
		for k := range want {
			f := &flight{done: make(chan struct{})}
			waits[k] = f
			mine = append(mine, claimed{c: want[k], f: f})
		}
		return mine, waits
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	seen := map[uint32]bool{}
	for k := range want {
		c := want[k]
		if seen[c.Index] {
			waits[k] = e.inflight[c.Index]
			continue
		}
		seen[c.Index] = true
		if bit(e.ready, c.Index) {
			continue
		}
		if f := e.inflight[c.Index]; f != nil {
			waits[k] = f
			continue
		}
		f := &flight{done: make(chan struct{})}
		e.inflight[c.Index] = f
		waits[k] = f
		mine = append(mine, claimed{c: c, f: f})
	}
	if len(mine) == 0 || b.src == nil || b.m.opts.NoAmplify || prefetch {
		return mine, waits
	}
	// Widen to neighbouring missing chunks within the batch window.
	sort.Slice(mine, func(i, j int) bool { return mine[i].c.CompressedOffset < mine[j].c.CompressedOffset })
	lo, hi := mine[0].c, mine[len(mine)-1].c
	span := hi.CompressedOffset + uint64(hi.CompressedSize) - lo.CompressedOffset
	budget := b.widenBudget() - int64(span)
	// The widening stays in the miss's request: fetched apart, in the
	// background, it doubled the requests of a reader of scattered small
	// files and made it slower (docs/benchmarks.md, issue 9).
	b.widen(hi.Index+1, budget, lo.Verify, seen, &mine)
	return mine, waits
}

// widenBudget is how far a miss is widened: the batch size (amplify_io)
// while most of what this handle widened was then read (a reader going
// through files laid out together), shrinking with the share that was
// not, down to an eighth of the batch (a reader of scattered files, for
// whom a wide window is mostly bytes nobody reads). Until a few batches
// were widened it is the batch size.
func (b *Blob) widenBudget() int64 {
	batch := int64(b.m.opts.BatchSize)
	w, used := b.widenedBytes.Load(), b.widenedUsed.Load()
	if w < widenWarmup*batch {
		return batch
	}
	if w > widenWindow*batch {
		// Forget the older half (a race here only blurs the estimate).
		b.widenedBytes.Store(w / 2)
		b.widenedUsed.Store(used / 2)
	}
	return min(batch, max(batch/8, 2*batch*used/w))
}

// widenWarmup and widenWindow are in batches: widening adapts after
// widenWarmup batches were widened, and looks back about widenWindow.
const (
	widenWarmup = 4
	widenWindow = 32
)

// widen claims the missing chunks from index from on, forward, while they
// fit budget bytes: what follows a miss is what a sequential reader asks
// for next. Called with e.mu held.
func (b *Blob) widen(from uint32, budget int64, verify bool, seen map[uint32]bool, mine *[]claimed) {
	e := b.e
	grow := func(i uint32) bool {
		if i >= e.desc.ChunkCount || seen[i] || bit(e.ready, i) || e.inflight[i] != nil {
			return false
		}
		c, ok := b.src.Chunk(i)
		if !ok || int64(c.CompressedSize) > budget {
			return false
		}
		c.Verify = verify
		seen[i] = true
		budget -= int64(c.CompressedSize)
		setBit(e.widened, i)
		b.widenedBytes.Add(int64(c.CompressedSize))
		f := &flight{done: make(chan struct{})}
		e.inflight[i] = f
		*mine = append(*mine, claimed{c: c, f: f})
		return true
	}
	for i := from; budget > 0 && grow(i); i++ {
	}
}

// maxRuns bounds the backend requests one fetch sends at once.
const maxRuns = 8

// maxAhead bounds a Manager's background fetches of reads in flight.
const maxAhead = 8

// maxFills bounds a Manager's detached fetches of read misses in flight.
const maxFills = 32

// tryAhead takes a background-fetch token if one is free.
func (m *Manager) tryAhead() bool {
	if m.opts.NoReadAhead {
		return false
	}
	select {
	case m.ahead <- struct{}{}:
		return true
	default:
		return false
	}
}

// background fetches claimed chunks off the reader's time, under the
// handle's background context, and returns the token tryAhead took. Must
// be called within an operation. A handle being closed cancels them: they
// settle as abandoned and their waiters fetch themselves.
func (b *Blob) background(cl []claimed) {
	b.tails.Add(1)
	go func() {
		defer b.tails.Done()
		defer func() { <-b.m.ahead }()
		b.m.metrics.readAheadBytes.Add(int64(runBytes(cl)))
		b.fetchRuns(b.bg, cl, false, false)
	}()
}

// runBytes is the stored size of claimed chunks.
func runBytes(cl []claimed) (n uint64) {
	for _, c := range cl {
		n += uint64(c.c.CompressedSize)
	}
	return n
}

// seqStreak is how many Gets in a row must each start at or right after
// where the one before ended before a reader counts as sequential: two
// neighbouring small files read one after the other are not a stream.
const seqStreak = 2

// readAhead starts a background fetch of the chunks that follow a
// sequential reader (seqStreak Gets in a row each starting at or right
// after where the one before ended) once less than a batch of the blob ahead of it is
// cached or being fetched: a batch's worth, from the first chunk missing.
// Readers never wait for it; it takes a background token or does nothing.
func (b *Blob) readAhead(chunks []Chunk) {
	if len(chunks) == 0 || !b.e.persist || b.src == nil || b.m.opts.NoAmplify {
		return
	}
	lo, hi := chunks[0].Index, chunks[0].Index
	for i := range chunks {
		lo, hi = min(lo, chunks[i].Index), max(hi, chunks[i].Index)
	}
	prev := b.seq.Swap(hi + 1)
	if prev == 0 || lo+1 < prev || lo > prev {
		b.streak.Store(0)
		return // first read, or not sequential
	}
	if b.streak.Add(1) < seqStreak {
		return
	}
	e := b.e
	batch := int64(b.m.opts.BatchSize)
	last, ok := b.src.Chunk(hi)
	if !ok {
		return
	}
	e.mu.Lock()
	// Find the first chunk neither cached nor being fetched, within a
	// batch of the reader.
	from := hi + 1
	for ; from < e.desc.ChunkCount && (bit(e.ready, from) || e.inflight[from] != nil); from++ {
		c, ok := b.src.Chunk(from)
		if !ok || int64(c.CompressedOffset)-int64(last.CompressedOffset+uint64(last.CompressedSize)) >= batch {
			e.mu.Unlock()
			return // far enough ahead already
		}
	}
	if from >= e.desc.ChunkCount || !b.m.tryAhead() {
		e.mu.Unlock()
		return
	}
	var cl []claimed
	b.widen(from, batch, chunks[0].Verify, map[uint32]bool{}, &cl)
	e.mu.Unlock()
	if len(cl) == 0 {
		<-b.m.ahead
		return
	}
	b.background(cl)
}

// fetchRuns fetches claimed chunks in merged runs and settles their
// flights. With detach (a read's miss, persistent cache), the runs go on
// in the background and fetchRuns returns at once: the reader waits on its
// own chunks' flights, which settle as their bytes arrive, and not for the
// widened rest of a run.
func (b *Blob) fetchRuns(ctx context.Context, mine []claimed, prefetch, detach bool) {
	sort.Slice(mine, func(i, j int) bool { return mine[i].c.CompressedOffset < mine[j].c.CompressedOffset })
	batch := b.m.opts.BatchSize
	if prefetch {
		batch = b.m.opts.Prefetch.BatchSize // requests were merged to it
	}
	detach = detach && b.e.persist && !b.m.opts.NoReadAhead
	var wg sync.WaitGroup
	slots := make(chan struct{}, maxRuns)
	for start := 0; start < len(mine); {
		end := start + 1
		first := mine[start].c.CompressedOffset
		last := first + uint64(mine[start].c.CompressedSize)
		for end < len(mine) {
			c := mine[end].c
			if c.CompressedOffset < last || c.CompressedOffset-last > maxGap ||
				c.CompressedOffset+uint64(c.CompressedSize)-first > batch {
				break
			}
			last = c.CompressedOffset + uint64(c.CompressedSize)
			end++
		}
		run := mine[start:end]
		switch {
		case detach:
			b.detach(ctx, run, first, last)
		case start == 0 && end == len(mine) || b.m.opts.NoReadAhead:
			b.fetchRun(ctx, run, first, last, prefetch)
		default:
			// Several runs: their GETs go out together (at most maxRuns
			// at once), not one after the other.
			wg.Add(1)
			slots <- struct{}{}
			go func() {
				defer func() { <-slots; wg.Done() }()
				b.fetchRun(ctx, run, first, last, prefetch)
			}()
		}
		start = end
	}
	wg.Wait()
}

// detach runs a read's fetch in the background (see fetchRuns), taking
// one of the Manager's fill slots, blocking while all are busy. The fetch
// keeps ctx's values (trace) but not its cancellation: a reader that
// gives up does not waste the bytes on the wire for the others waiting;
// closing the handle cancels it. Must be called within an operation.
func (b *Blob) detach(ctx context.Context, run []claimed, first, last uint64) {
	select {
	case b.m.fills <- struct{}{}:
	case <-ctx.Done():
		for _, cl := range run {
			b.settle(ctx, cl, false, nil, ctx.Err())
		}
		return
	}
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(b.bg, cancel)
	b.tails.Add(1)
	go func() {
		defer func() {
			stop()
			cancel()
			<-b.m.fills
			b.tails.Done()
		}()
		b.fetchRun(fctx, run, first, last, false)
	}()
}

func (b *Blob) fetchRun(ctx context.Context, run []claimed, first, last uint64, prefetch bool) {
	// trace: the cache fill (package spans; no-op unless sampled).
	ctx, span := spans.Start(ctx, "cache.fill")
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("chunks", len(run)), attribute.Int64("bytes", int64(last-first)), attribute.Bool("prefetch", prefetch))
	}
	defer span.End()
	settle := func(cl claimed, stored bool, data []byte, err error) { b.settle(ctx, cl, stored, data, err) }
	h, _, err := b.backendBlob(ctx)
	if err == nil {
		if prefetch {
			err = b.m.limiter.wait(ctx, int64(last-first))
		} else {
			b.m.limiter.take(int64(last - first))
			b.m.demand.Add(1)
			defer func() {
				b.m.lastDemand.Store(time.Now().UnixNano())
				b.m.demand.Add(-1)
			}()
		}
	}
	if err != nil {
		for _, cl := range run {
			settle(cl, false, nil, err)
		}
		return
	}
	buf := make([]byte, last-first)
	// Each chunk is decoded, stored and handed to its waiters as soon as
	// its bytes are in, while the rest of the answer is still arriving:
	// a miss widened to the chunks after it waits only for its own.
	next := 0
	deliver := func(valid int) {
		for ; next < len(run); next++ {
			c := &run[next].c
			if c.CompressedOffset+uint64(c.CompressedSize)-first > uint64(valid) {
				return
			}
			b.land(ctx, run[next], buf[c.CompressedOffset-first:c.CompressedOffset-first+uint64(c.CompressedSize)])
		}
	}
	if err := b.readBackend(backend.WithProgress(ctx, deliver), h, buf, first); err != nil {
		for _, cl := range run[next:] {
			settle(cl, false, nil, err)
		}
		return
	}
	if prefetch {
		b.m.metrics.prefetchBytes.Add(int64(len(buf)))
	}
	deliver(len(buf))
}

// land decodes a fetched chunk from raw, its stored bytes (a slice of the
// request's buffer), checks, stores and marks it, and settles its flight.
func (b *Blob) land(ctx context.Context, cl claimed, raw []byte) {
	e := b.e
	c := &cl.c
	data, err := b.dec.Decode(c, raw)
	if err == nil && len(data) != int(c.UncompressedSize) {
		err = fmt.Errorf("blob %s chunk %d: decoded %d bytes, want %d", e.desc.ID, c.Index, len(data), c.UncompressedSize)
	}
	if err != nil {
		b.settle(ctx, cl, false, nil, err)
		return
	}
	if c.Verify {
		setBit(e.verified, c.Index)
	}
	stored := false
	if e.raw {
		stored = e.store(c, raw)
	} else if e.persist {
		stored = e.store(c, data)
	}
	if stored && !e.raw {
		data = nil
	} else if len(data) > 0 && len(raw) > 0 && &data[0] == &raw[0] {
		data = append([]byte(nil), data...) // do not pin the whole request's buffer
	}
	b.settle(ctx, cl, stored, data, nil)
}

// settle ends a claimed chunk's flight: its waiters get the result.
func (b *Blob) settle(ctx context.Context, cl claimed, stored bool, data []byte, err error) {
	e := b.e
	cl.f.stored, cl.f.data, cl.f.err = stored, data, err
	// Failed because this fetcher's own request ended (a guest request
	// abandoned, a prefetch stopped, a handle closed): waiters fetch
	// themselves. A backend timeout is a failure like any other.
	cl.f.abandoned = err != nil && ctx.Err() != nil
	if e.persist {
		e.mu.Lock()
		delete(e.inflight, cl.c.Index)
		e.mu.Unlock()
	}
	close(cl.f.done)
}

// Metadata files a reader may keep in the cache directory, next to the
// chunk data, named as nydusd names them.
const (
	MetaSuffix   = ".blob.meta"   // ci array padded to 4 KiB, then the blob.meta header
	DigestSuffix = ".blob.digest" // chunk digest array, 32 bytes per chunk
)

// ReadAux returns the cached <blob_id><suffix> file's bytes, or nil when
// there is none (or no persistent cache). The caller checks them.
func (b *Blob) ReadAux(suffix string) []byte {
	if !b.m.opts.Persistent() {
		return nil
	}
	data, err := os.ReadFile(filepath.Join(b.m.opts.WorkDir, b.e.desc.ID+suffix))
	if err != nil {
		return nil
	}
	return data
}

// WriteAux stores the <blob_id><suffix> file (written to a temporary name,
// synced and renamed into place). Failures only cost a refetch next time.
func (b *Blob) WriteAux(suffix string, data []byte) {
	if !b.m.opts.Persistent() {
		return
	}
	id := b.e.desc.ID
	tmp, err := os.CreateTemp(b.m.opts.WorkDir, id+suffix+".*.tmp")
	if err == nil {
		_, err = tmp.Write(data)
		if err == nil {
			err = tmp.Sync()
		}
		err = errors.Join(err, tmp.Close())
		if err == nil {
			err = os.Rename(tmp.Name(), filepath.Join(b.m.opts.WorkDir, id+suffix))
		}
		if err != nil {
			os.Remove(tmp.Name())
		}
	}
	if err != nil {
		b.m.warnOnce("aux:"+id+suffix, "blob cache: blob %s: cannot store %s%s: %v", id, id, suffix, err)
	}
}

// AllReady reports whether every chunk of the blob is cached.
func (b *Blob) AllReady() bool { return b.e.allReady() }

// Ready reports whether chunk index is cached.
func (b *Blob) Ready(index uint32) bool { return b.e.isReady(index) }
