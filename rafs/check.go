package rafs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/backend"
)

// CheckOptions tune Check.
type CheckOptions struct {
	// Verbose lists every path with its inode, mode and size on Out.
	Verbose bool
	Out     io.Writer
}

// CheckReport counts what Check looked at.
type CheckReport struct {
	Dirs, Files, Symlinks, Others int
	FileBytes                     uint64
	// ChunksVerified counts distinct chunks whose data matched their
	// digest; ChunksUnverified those that have no digest to check.
	ChunksVerified, ChunksUnverified int
	// MissingBlobs lists blobs the backend does not have (their chunks
	// were not verified).
	MissingBlobs []string
}

// Check validates the whole image: every inode decodes, directories are
// sorted and acyclic, every name looks up to its entry, v5 inode digests
// match their children or chunks, and, when the backend has the blobs,
// every chunk's data matches its digest. The first inconsistency is
// returned as an error naming the path.
func (img *Image) Check(ctx context.Context, o CheckOptions) (*CheckReport, error) {
	r := &CheckReport{}
	verified := map[chunkKey]bool{}
	missing := map[int]bool{}
	err := img.Walk(func(p string, n *Inode) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if o.Verbose && o.Out != nil {
			fmt.Fprintf(o.Out, "%8d %07o %4d %10d %s\n", n.Ino, n.Mode, n.Nlink, n.Size, p)
		}
		if m, ok := img.f.(*v5); ok {
			if err := m.verifyDigest(n); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		if _, err := img.Xattrs(n.Ino); err != nil {
			return fmt.Errorf("%s: xattrs: %w", p, err)
		}
		switch {
		case n.IsDir():
			r.Dirs++
			return img.checkDir(p, n)
		case n.IsSymlink():
			r.Symlinks++
			_, err := img.Readlink(n.Ino)
			return wrapPath(p, err)
		case n.IsRegular():
			r.Files++
			r.FileBytes += n.Size
			return wrapPath(p, img.checkFile(ctx, n, r, verified, missing))
		}
		r.Others++
		return nil
	})
	for i := range missing {
		r.MissingBlobs = append(r.MissingBlobs, img.blobs[i].id)
	}
	return r, err
}

func wrapPath(p string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", p, err)
}

// checkDir makes sure every entry of a directory is found by lookup (the
// entries are sorted) and that names are unique.
func (img *Image) checkDir(p string, d *Inode) error {
	var prev string
	var ierr error
	err := img.ReadDir(d.Ino, 0, func(e DirEntry) bool {
		if e.Name == "." || e.Name == ".." {
			return true
		}
		if prev != "" && e.Name <= prev {
			ierr = formatErr("%s: entries %q and %q are not sorted", p, prev, e.Name)
			return false
		}
		prev = e.Name
		n, err := img.Lookup(d.Ino, e.Name)
		if err != nil || n.Ino != e.Ino {
			ierr = formatErr("%s: lookup of %q does not find its entry (%v)", p, e.Name, err)
			return false
		}
		return true
	})
	if err != nil {
		return wrapPath(p, err)
	}
	return ierr
}

// checkFile verifies the chunk layout of a file and, when its blob is
// available, the digest of every chunk not verified yet.
func (img *Image) checkFile(ctx context.Context, n *Inode, r *CheckReport, verified map[chunkKey]bool, missing map[int]bool) error {
	if _, flat, err := img.f.flatData(n); flat {
		return err
	}
	var covered uint64
	return img.f.chunks(n, 0, n.Size, func(c chunkRef) error {
		if c.fileOff < covered {
			return formatErr("chunk at file offset %d overlaps the previous one", c.fileOff)
		}
		covered = c.fileOff + uint64(c.length)
		if c.hole || c.primary {
			return nil
		}
		if img.opts.Backend == nil && img.f.version() == 5 {
			return nil
		}
		if err := img.resolve(ctx, &c); err != nil {
			if errors.Is(err, backend.ErrNotFound) {
				missing[int(c.blob)] = true
				return nil
			}
			return err
		}
		if err := img.checkChunkTable(&c); err != nil {
			return err
		}
		if img.opts.Backend == nil || missing[int(c.blob)] {
			return nil
		}
		b := img.blobs[c.blob]
		key := chunkKey{blob: b.index, off: c.ci.CompressedOffset, size: c.ci.UncompressedSize}
		if verified[key] {
			return nil
		}
		o, err := b.open(ctx, img.opts.Backend)
		if errors.Is(err, backend.ErrNotFound) {
			missing[int(c.blob)] = true
			return nil
		}
		if err != nil {
			return err
		}
		raw, err := readRange(ctx, o, c.ci.CompressedOffset, uint64(c.ci.CompressedSize), "chunk data")
		if err != nil {
			return fmt.Errorf("blob %s: %w", b.id, err)
		}
		data := raw
		if c.ci.Compressed {
			if data, err = img.codecs.decompress(b.compression, raw, uint64(c.ci.UncompressedSize)); err != nil {
				return fmt.Errorf("blob %s chunk %d: %w", b.id, c.ci.Index, err)
			}
		}
		if !c.ci.HasDigest && c.ci.Flags&ciHasCRC32 == 0 || b.raw {
			r.ChunksUnverified++
		} else if err := verifyChunk(b.digestAlgo, &c.ci, data); err != nil {
			return fmt.Errorf("blob %s: %w: %v", b.id, ErrDigest, err)
		} else {
			r.ChunksVerified++
		}
		verified[key] = true
		return nil
	})
}

// verifyDigest checks a v5 inode's Merkle digest against its chunks,
// symlink target or children.
func (m *v5) verifyDigest(n *Inode) error {
	var h []byte
	switch n.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		base, _ := m.chunkArea(n)
		for k := uint64(0); k < uint64(n.v5.childCount); k++ {
			h = append(h, m.d[base+k*chunkInfoV5Size:base+k*chunkInfoV5Size+32]...)
		}
	case syscall.S_IFLNK:
		t, err := m.readlink(n)
		if err != nil {
			return err
		}
		h = t
	case syscall.S_IFDIR:
		first, count := m.children(n)
		for i := uint64(0); i < count; i++ {
			c, err := m.inode(first + i)
			if err != nil {
				return err
			}
			h = append(h, c.v5.digest[:]...)
		}
	}
	got, err := digest(m.dalgo, h)
	if err != nil {
		return err
	}
	if got != n.v5.digest {
		return formatErr("v5 inode %d: digest %x, computed %x", n.id, n.v5.digest, got)
	}
	return nil
}

// checkChunkTable compares a v6 chunk's ci with its entry in the bootstrap
// chunk table, when the image has one and the ci came from the blob.
func (img *Image) checkChunkTable(c *chunkRef) error {
	m, ok := img.f.(*v6)
	if !ok || !c.needCI || len(m.chunkTable) == 0 || img.blobs[c.blob].ci == nil {
		return nil
	}
	e, ok := m.chunkTableEntry(c.blob, c.ciIndex)
	if !ok {
		return formatErr("blob %d ci %d is missing from the bootstrap chunk table", c.blob, c.ciIndex)
	}
	if e.CompressedOffset != c.ci.CompressedOffset || e.CompressedSize != c.ci.CompressedSize ||
		e.UncompressedOffset != c.ci.UncompressedOffset || e.UncompressedSize != c.ci.UncompressedSize ||
		e.Compressed != c.ci.Compressed || (c.ci.HasDigest && e.Digest != c.ci.Digest) {
		return formatErr("blob %d ci %d: the bootstrap chunk table says %+v, the blob %+v", c.blob, c.ciIndex, e, c.ci)
	}
	return nil
}
