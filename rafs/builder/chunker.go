package builder

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// chunkJob is one chunk on its way through the pipeline.
type chunkJob struct {
	ino    *inode
	idx    int
	raw    []byte
	comp   []byte // compressed bytes, nil when stored raw
	buf    *[]byte
	cbuf   *[]byte
	digest [32]byte
	seen   bool // a chunk of the same digest came first: not compressed
	err    error
	done   chan struct{}
}

// chunker cuts files into chunks, hashes and compresses them on several
// goroutines, and hands them in submission order to a single consumer that
// deduplicates and appends to the blob, so the output does not depend on
// scheduling.
type chunker struct {
	ctx       context.Context
	cancel    context.CancelFunc
	chunkSize int
	digester  string
	blob      *blobWriter
	blobIndex uint32
	dedup     map[[32]byte]chunkRef
	seen      sync.Map // digests hashed so far (and the parent's): compress each once
	compAlgo  string
	late      *compressor // the consumer's, for a seen chunk whose first copy it has not placed
	work      chan *chunkJob
	order     chan *chunkJob
	bufs      sync.Pool
	cbufs     sync.Pool
	wg        sync.WaitGroup
	consumed  chan struct{}
	err       error // set by the consumer before consumed closes

	// statistics
	bytesIn    atomic.Int64
	newChunks  atomic.Int64
	dupChunks  atomic.Int64
	newBytes   atomic.Int64
	totalBytes int64 // expected input, for the progress bar
}

func newChunker(ctx context.Context, opts *Options, blob *blobWriter, blobIndex uint32, dedup map[[32]byte]chunkRef) (*chunker, error) {
	workers := opts.Workers
	if workers <= 0 {
		workers = defaultWorkers()
	}
	ctx, cancel := context.WithCancel(ctx)
	c := &chunker{
		ctx: ctx, cancel: cancel,
		chunkSize: int(opts.ChunkSize),
		digester:  opts.Digester,
		blob:      blob,
		blobIndex: blobIndex,
		dedup:     dedup,
		compAlgo:  opts.Compressor,
		work:      make(chan *chunkJob, workers),
		order:     make(chan *chunkJob, 2*workers+2),
		consumed:  make(chan struct{}),
	}
	size := c.chunkSize
	c.bufs.New = func() any { b := make([]byte, size); return &b }
	c.cbufs.New = func() any { b := make([]byte, size+size/8+1024); return &b }
	for i := 0; i < workers; i++ {
		comp, err := newCompressor(opts.Compressor)
		if err != nil {
			cancel()
			return nil, err
		}
		c.wg.Add(1)
		go c.worker(comp)
	}
	for d := range dedup {
		c.seen.Store(d, struct{}{})
	}
	go c.consume()
	return c, nil
}

func (c *chunker) worker(comp *compressor) {
	defer c.wg.Done()
	for j := range c.work {
		j.digest = chunkDigest(c.digester, j.raw)
		// A chunk seen before is almost always a duplicate the consumer
		// drops: compress only the first.
		_, j.seen = c.seen.LoadOrStore(j.digest, struct{}{})
		if comp.algo != CompressNone && !j.seen {
			j.cbuf = c.cbufs.Get().(*[]byte)
			j.comp, j.err = comp.compress(*j.cbuf, j.raw)
		}
		close(j.done)
	}
}

func (c *chunker) consume() {
	defer close(c.consumed)
	for j := range c.order {
		<-j.done
		if c.err != nil {
			c.release(j)
			continue
		}
		if c.err = c.place(j); c.err != nil {
			c.cancel()
		}
	}
}

// release returns a job's buffers to the pools.
func (c *chunker) release(j *chunkJob) {
	c.bufs.Put(j.buf)
	if j.cbuf != nil {
		c.cbufs.Put(j.cbuf)
	}
}

// place deduplicates one chunk or appends it to the blob; either way the
// job's buffers are released (after the write, for appended chunks).
func (c *chunker) place(j *chunkJob) error {
	if j.err != nil {
		c.release(j)
		return fmt.Errorf("compress chunk %d: %w", j.idx, j.err)
	}
	c.bytesIn.Add(int64(len(j.raw)))
	if ref, ok := c.dedup[j.digest]; ok {
		j.ino.Chunks[j.idx] = ref
		c.dupChunks.Add(1)
		c.release(j)
		return nil
	}
	if j.seen && c.compAlgo != CompressNone {
		// Its first copy is still ahead in the order (another worker
		// hashed it first), so this one is stored after all.
		if err := c.compressLate(j); err != nil {
			c.release(j)
			return fmt.Errorf("compress chunk %d: %w", j.idx, err)
		}
	}
	if len(c.blob.ci)/ciV1Size >= 1<<24 {
		c.release(j)
		return fmt.Errorf("more than 2^24 chunks in one blob: use a larger chunk size")
	}
	ref, err := c.blob.addChunk(j.raw, j.comp, j.digest, func() { c.release(j) })
	if err != nil {
		return err
	}
	ref.BlobIndex = c.blobIndex
	c.dedup[j.digest] = ref
	j.ino.Chunks[j.idx] = ref
	c.newChunks.Add(1)
	c.newBytes.Add(int64(ref.CSize))
	return nil
}

// compressLate compresses a job the workers skipped, on the consumer.
func (c *chunker) compressLate(j *chunkJob) error {
	if c.late == nil {
		comp, err := newCompressor(c.compAlgo)
		if err != nil {
			return err
		}
		c.late = comp
	}
	j.cbuf = c.cbufs.Get().(*[]byte)
	var err error
	j.comp, err = c.late.compress(*j.cbuf, j.raw)
	return err
}

// addFile reads ino.Size bytes from r and queues them as chunks. what names
// the file in errors.
func (c *chunker) addFile(ino *inode, r io.Reader, what string) error {
	n := int((ino.Size + uint64(c.chunkSize) - 1) / uint64(c.chunkSize))
	ino.Chunks = make([]chunkRef, n)
	left := int64(ino.Size)
	for k := 0; k < n; k++ {
		buf := c.bufs.Get().(*[]byte)
		m := int64(c.chunkSize)
		if left < m {
			m = left
		}
		if _, err := io.ReadFull(r, (*buf)[:m]); err != nil {
			c.bufs.Put(buf)
			return fmt.Errorf("%s: read: %w", what, err)
		}
		left -= m
		j := &chunkJob{ino: ino, idx: k, raw: (*buf)[:m], buf: buf, done: make(chan struct{})}
		select {
		case c.order <- j:
		case <-c.ctx.Done():
			c.bufs.Put(buf)
			return c.ctx.Err()
		}
		select {
		case c.work <- j:
		case <-c.ctx.Done():
			j.err = c.ctx.Err()
			close(j.done) // the consumer sees the error and skips it
			return c.ctx.Err()
		}
	}
	return nil
}

// close waits for every queued chunk and returns the first error the
// consumer met (the real cause when addFile saw only a cancellation).
func (c *chunker) close() error {
	close(c.work)
	c.wg.Wait()
	close(c.order)
	<-c.consumed
	c.cancel()
	return c.err
}
