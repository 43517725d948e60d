package rafs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/storage"
)

// PrefetchOptions say what to warm the blob cache with when an image is
// mounted, in nydusd's order: Files (--prefetch-files, the API's
// prefetch_files) when given, else the bootstrap's prefetch table; then,
// with All (prefetch_all), every chunk of every blob. As in nydusd, Files
// of just "/" or a table of just the root inode mean All (v6: every chunk
// by the blobs' chunk tables, without walking the tree), and a list that
// holds the root among other entries makes All redundant. There are no
// blob-level prefetch ranges to honour: the v6 blob table has no such
// field (nydusd's range prefetch reads them from blob info that a loaded
// v6 image leaves at zero), and v5's readahead fields are not used for
// prefetch by nydusd either.
type PrefetchOptions struct {
	// Files are absolute paths in the image; a directory means its whole
	// subtree and "/" the whole image.
	Files []string
	All   bool
}

// Prefetch is a running prefetch of an image.
type Prefetch struct {
	done chan struct{}
	mu   sync.Mutex
	jobs []*storage.PrefetchJob
	err  error
}

// Wait blocks until every queued chunk was fetched (or dropped) or ctx
// ends; it returns the error that stopped collecting the list, if any.
func (p *Prefetch) Wait(ctx context.Context) error {
	select {
	case <-p.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	for _, j := range p.jobs {
		if err := j.Wait(ctx); err != nil {
			return err
		}
	}
	return p.err
}

// StartPrefetch collects the chunks o names in the background and queues
// them on the storage layer's prefetch workers. It stops when the image
// is closed. Relative paths are an error (as nydusd's).
func (img *Image) StartPrefetch(o PrefetchOptions) (*Prefetch, error) {
	for _, f := range o.Files {
		if !strings.HasPrefix(f, "/") {
			return nil, fmt.Errorf("prefetch file %q: not an absolute path", f)
		}
	}
	if img.closed.Load() {
		return nil, errors.New("prefetch: image closed")
	}
	p := &Prefetch{done: make(chan struct{})}
	if so := img.store.Options(); !so.Persistent() {
		// Nothing would be kept: say so rather than "prefetch done".
		img.log.Warnf("rafs: prefetch: the blob cache (type %q) keeps nothing on disk; nothing prefetched", cmp.Or(so.Type, "none"))
		close(p.done)
		return p, nil
	}
	img.bg.Add(1)
	go func() {
		defer img.bg.Done()
		p.err = img.prefetch(img.ctx, o, p)
		close(p.done)
		if p.err != nil {
			if !errors.Is(p.err, context.Canceled) && img.logOK() {
				img.log.Warnf("rafs: prefetch: %v", p.err)
			}
			return
		}
		// Operators (and tests) learn from the log when the cache holds
		// what was asked for; Close cancels img.ctx before it waits.
		if p.Wait(img.ctx) == nil {
			img.log.Infof("rafs: prefetch done")
		}
	}()
	return p, nil
}

func (img *Image) prefetch(ctx context.Context, o PrefetchOptions, p *Prefetch) error {
	var inos []uint64
	whole := o.All
	table := img.Prefetch()
	switch {
	case len(o.Files) == 1 && o.Files[0] == "/",
		len(o.Files) == 0 && len(table) == 1 && table[0] == RootIno:
		// The list is the whole image (the command line's "/", or a
		// bootstrap table holding only the root, as builders write for
		// "prefetch everything"): nydusd takes that for prefetch_all and
		// fetches every chunk of every blob instead of walking the tree.
		whole = true
	case len(o.Files) > 0:
		for _, f := range o.Files {
			ino, err := img.resolvePath(f)
			if err != nil {
				if img.logOK() {
					img.log.Warnf("rafs: prefetch file %s: %v", f, err)
				}
				continue
			}
			inos = append(inos, ino)
		}
	default:
		inos = table
	}
	for _, ino := range inos {
		if ino == RootIno {
			// The root among other entries: the walk below covers the
			// whole tree, so prefetch_all adds nothing (nydusd skips it).
			whole = false
		}
	}
	per := map[uint32][]storage.Chunk{}
	seen := map[uint64]bool{}
	var walk func(ino uint64) error
	walk = func(ino uint64) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if seen[ino] {
			return nil
		}
		seen[ino] = true
		n, err := img.Inode(ino)
		if err != nil {
			return err
		}
		switch {
		case n.IsDir():
			var kids []uint64
			if err := img.ReadDir(ino, 0, func(e DirEntry) bool {
				if e.Name != "." && e.Name != ".." {
					kids = append(kids, e.Ino)
				}
				return true
			}); err != nil {
				return err
			}
			for _, k := range kids {
				if err := walk(k); err != nil {
					return err
				}
			}
		case n.IsRegular():
			if _, flat, _ := img.f.flatData(n); flat {
				return nil
			}
			refs, err := img.readPlan(ctx, n, 0, n.Size)
			if err != nil {
				return err
			}
			for i := range refs {
				c := &refs[i]
				if c.hole || c.primary || img.blobs[c.blob].raw {
					continue
				}
				per[c.blob] = append(per[c.blob], img.storageChunk(img.blobs[c.blob], c))
			}
		}
		return nil
	}
	for _, ino := range inos {
		if err := walk(ino); err != nil && !errors.Is(err, syscall.ENOENT) {
			return err
		}
	}
	if err := img.queue(ctx, per, p); err != nil {
		return err
	}
	if !whole {
		return nil
	}
	// prefetch_all: every chunk of every blob, from the ci arrays (v6);
	// blobs without one (v5) through the tree.
	clear(per)
	needTree := false
	for bi, b := range img.blobs {
		if b.raw {
			continue
		}
		if !b.hasCI {
			needTree = true
			continue
		}
		o, err := b.open(ctx, img.opts.Backend)
		if err != nil {
			return err
		}
		if err := img.loadMeta(ctx, b); err != nil {
			return err
		}
		src := chunkSource{b}
		for i := uint32(0); i < b.chunkCount; i++ {
			if o.s.Ready(i) {
				continue
			}
			if c, ok := src.Chunk(i); ok {
				per[uint32(bi)] = append(per[uint32(bi)], c)
			}
		}
	}
	if needTree {
		if err := walk(RootIno); err != nil {
			return err
		}
	}
	return img.queue(ctx, per, p)
}

// queue hands each blob's chunks to the storage layer's prefetch workers.
func (img *Image) queue(ctx context.Context, per map[uint32][]storage.Chunk, p *Prefetch) error {
	for bi, cs := range per {
		b := img.blobs[bi]
		o, err := b.open(ctx, img.opts.Backend)
		if err != nil {
			return err
		}
		job := img.store.Prefetch(ctx, o.s, cs)
		p.mu.Lock()
		p.jobs = append(p.jobs, job)
		p.mu.Unlock()
	}
	return nil
}

// resolvePath finds the inode of an absolute image path.
func (img *Image) resolvePath(p string) (uint64, error) {
	ino := uint64(RootIno)
	for _, name := range strings.Split(p, "/") {
		if name == "" {
			continue
		}
		n, err := img.Lookup(ino, name)
		if err != nil {
			return 0, err
		}
		ino = n.Ino
	}
	return ino, nil
}
