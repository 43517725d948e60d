package builder

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/layout"
)

// Stats counts what a build did.
type Stats struct {
	Inodes       int   // unique inodes in the image
	BytesIn      int64 // regular-file bytes chunked from the source
	NewChunks    int64 // chunks stored in the new blob
	DedupChunks  int64 // chunks found already stored (in this image or the parent)
	NewBlobBytes int64 // chunk data bytes (compressed) added to the new blob
	BlobSize     int64 // size of the new blob file
}

// Result says what a build wrote.
type Result struct {
	BootstrapPath string
	// BlobID is the new blob's id, or "" when the source added no data (no
	// blob is written then).
	BlobID   string
	BlobPath string
	// BlobSHA256 is the hex sha256 of the whole blob file (its digest as
	// an OCI layer), hashed while it was written; "" without a blob.
	BlobSHA256 string
	// BlobIDs lists every blob the bootstrap refers to, in blob-table order.
	BlobIDs []string
	Stats   Stats
}

// Build makes a RAFS image of source (a directory, or a tar / tar.gz layer
// per opts.Type). The bootstrap goes to bootstrapPath and the blob to
// blobDir/<blob id> (or opts.BlobPath). Nothing is left behind on error.
func Build(ctx context.Context, source, bootstrapPath, blobDir string, opts Options) (*Result, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	if opts.FsVersion == 5 && opts.BlobInlineMeta {
		return nil, fmt.Errorf("--blob-inline-meta needs RAFS v6")
	}
	b := &build{ctx: ctx, opts: &opts, blobDir: blobDir}
	defer b.cleanup()
	res, err := b.run(source, bootstrapPath)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// BuildDir is a convenience for tests: it builds directory src into outDir
// (bootstrap outDir/image.boot, blob outDir/<blob id>) and returns the
// bootstrap path and the new blob id ("" when there is no data).
func BuildDir(src, outDir string, opts Options) (bootstrapPath, blobID string, err error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", "", err
	}
	opts.Type = DirRafs
	res, err := Build(context.Background(), src, filepath.Join(outDir, "image.boot"), outDir, opts)
	if err != nil {
		return "", "", err
	}
	return res.BootstrapPath, res.BlobID, nil
}

// build holds one build's state.
type build struct {
	ctx     context.Context
	opts    *Options
	blobDir string
	temps   []string // removed by cleanup unless renamed
}

func (b *build) tempFile(dir, base string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create temporary file: %w", err)
	}
	b.temps = append(b.temps, f.Name())
	return f, nil
}

func (b *build) cleanup() {
	for _, t := range b.temps {
		os.Remove(t)
	}
}

func (b *build) run(source, bootstrapPath string) (*Result, error) {
	opts := b.opts
	var blobs []blobInfo
	dedup := map[[32]byte]chunkRef{}
	lower := &inode{Mode: modeDir | 0o755}
	if opts.ParentBootstrap != "" {
		parent, err := loadParent(b.ctx, opts.ParentBootstrap, opts)
		if err != nil {
			return nil, err
		}
		lower, blobs, dedup = parent.root, parent.blobs, parent.chunks
	}
	if opts.ChunkDict != "" {
		if opts.ParentBootstrap != "" {
			return nil, fmt.Errorf("a chunk dictionary and a parent bootstrap cannot be combined")
		}
		dict, err := loadChunkDict(b.ctx, opts.ChunkDict, opts)
		if err != nil {
			return nil, err
		}
		blobs, dedup = dict.blobs, dict.chunks
	}

	blobTmpDir := b.blobDir
	if opts.BlobPath != "" {
		blobTmpDir = filepath.Dir(opts.BlobPath)
	}
	bf, err := b.tempFile(blobTmpDir, "blob")
	if err != nil {
		return nil, err
	}
	defer bf.Close()
	bw := newBlobWriter(bf, opts.Compressor, opts.Digester)
	bw.v5 = opts.FsVersion == 5
	defer bw.endData()
	ck, err := newChunker(b.ctx, opts, bw, uint32(len(blobs)), dedup)
	if err != nil {
		return nil, err
	}
	var total int64
	if opts.Progress != nil && opts.Reader == nil {
		total = sourceSize(source, opts.Type)
	}
	stopProgress := startProgress(opts.Progress, ck, total)
	layer, ferr := b.loadSource(source, ck)
	if ferr == nil && opts.Type == DirRafs {
		ferr = b.chunkFiles(ck, dataOrder(layer))
	}
	cerr := ck.close()
	stopProgress()
	if cerr != nil {
		return nil, cerr
	}
	if ferr != nil {
		return nil, ferr
	}
	mergeLayer(lower, layer)
	root := lower
	if err := resolveLinks(root); err != nil {
		return nil, err
	}
	img := newImage(root, blobs, opts)
	res := &Result{BootstrapPath: bootstrapPath}
	res.Stats = Stats{Inodes: len(img.inodes), BytesIn: ck.bytesIn.Load(), NewChunks: ck.newChunks.Load(),
		DedupChunks: ck.dupChunks.Load(), NewBlobBytes: ck.newBytes.Load()}
	if img.prefetch, err = resolvePrefetch(root, opts.PrefetchFiles); err != nil {
		return nil, err
	}
	makeBoot := func(blobs []blobInfo) ([]byte, error) {
		img.blobs = blobs
		if opts.FsVersion == 5 {
			return writeV5(img, opts.Digester)
		}
		return writeV6(img)
	}
	hasBlob := ck.newChunks.Load() > 0 || opts.EmptyBlob
	if opts.BlobInlineMeta && !hasBlob {
		return nil, fmt.Errorf("--blob-inline-meta: the source adds no file data, so there is no blob to inline into")
	}
	var boot []byte
	if hasBlob {
		// A blob without chunks (EmptyBlob) is written but not listed in
		// the blob table: a device of no blocks is not a valid RAFS device.
		listed := ck.newChunks.Load() > 0
		var inline func(blobInfo) ([]byte, error)
		if opts.BlobInlineMeta {
			inline = func(self blobInfo) ([]byte, error) {
				if !listed {
					return makeBoot(blobs)
				}
				return makeBoot(append(blobs[:len(blobs):len(blobs)], self))
			}
		}
		info, inlined, err := bw.finish(inline)
		if err != nil {
			return nil, err
		}
		if listed {
			blobs = append(blobs, info)
		}
		res.BlobID = info.ID
		res.BlobSHA256 = bw.fileDigest()
		res.Stats.BlobSize = int64(info.CompressedSize)
		// With inline metadata the bootstrap file is a copy of the one in
		// the blob (nydus resolves its placeholder blob id by file name).
		boot = inlined
	}
	bf.Close()
	for _, bl := range blobs {
		res.BlobIDs = append(res.BlobIDs, bl.ID)
	}
	if boot == nil {
		if boot, err = makeBoot(blobs); err != nil {
			return nil, err
		}
	}
	tf, err := b.tempFile(filepath.Dir(bootstrapPath), filepath.Base(bootstrapPath))
	if err != nil {
		return nil, err
	}
	if _, err := tf.Write(boot); err != nil {
		tf.Close()
		return nil, fmt.Errorf("write bootstrap: %w", err)
	}
	if err := tf.Close(); err != nil {
		return nil, fmt.Errorf("write bootstrap: %w", err)
	}
	if res.BlobID != "" {
		res.BlobPath = opts.BlobPath
		if res.BlobPath == "" {
			res.BlobPath = filepath.Join(b.blobDir, res.BlobID)
		}
		if err := os.Chmod(bf.Name(), 0o644); err != nil {
			return nil, err
		}
		if err := os.Rename(bf.Name(), res.BlobPath); err != nil {
			return nil, fmt.Errorf("write blob: %w", err)
		}
	}
	if err := os.Chmod(tf.Name(), 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(tf.Name(), bootstrapPath); err != nil {
		return nil, fmt.Errorf("write bootstrap: %w", err)
	}
	return res, nil
}

// newImage lays out the merged tree for a bootstrap writer.
func newImage(root *inode, blobs []blobInfo, opts *Options) *image {
	inodes := orderInodes(root)
	img := &image{root: root, inodes: inodes, parents: parentsOf(root), blobs: blobs, chunkSize: opts.ChunkSize}
	img.flags = compressorAlgo(opts.Compressor).SuperFlag() | digesterAlgo(opts.Digester).SuperFlag() | layout.FlagExplicitUIDGID
	if opts.FsVersion == 6 {
		img.flags |= layout.FlagInlinedDigest
	}
	for _, n := range inodes {
		if len(n.Xattrs) > 0 {
			img.flags |= layout.FlagHasXattr
			break
		}
	}
	return img
}

// loadSource reads the source into a layer tree. Tar data is chunked while
// reading; directory files are chunked afterwards by chunkFiles.
func (b *build) loadSource(source string, ck *chunker) (*inode, error) {
	if b.opts.Type == DirRafs {
		real, err := filepath.EvalSymlinks(source)
		if err != nil {
			return nil, fmt.Errorf("source: %w", err)
		}
		return scanDir(b.ctx, real, b.opts.WhiteoutSpec, b.opts.Log)
	}
	if b.opts.Reader != nil {
		return scanTar(b.ctx, bufio.NewReaderSize(b.opts.Reader, 1<<20), b.opts.Type == TargzRafs, b.opts.WhiteoutSpec, ck)
	}
	f, err := os.Open(source)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	defer f.Close()
	return scanTar(b.ctx, bufio.NewReaderSize(f, 1<<20), b.opts.Type == TargzRafs, b.opts.WhiteoutSpec, ck)
}

// sourceSize estimates the bytes to read, for the progress bar.
func sourceSize(source string, t SourceType) int64 {
	if t != DirRafs {
		if st, err := os.Stat(source); err == nil {
			return st.Size()
		}
		return 0
	}
	var total int64
	filepath.WalkDir(source, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	return total
}

// chunkFiles feeds every regular file that still needs its data read, in
// inode order.
func (b *build) chunkFiles(ck *chunker, inodes []*inode) error {
	for _, n := range inodes {
		if !n.isReg() || n.srcPath == "" {
			continue
		}
		f, err := os.Open(n.srcPath)
		if err != nil {
			return fmt.Errorf("source file: %w", err) // names the path
		}
		err = ck.addFile(n, f, n.srcPath)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// parentsOf maps every directory to its parent (the root to itself).
func parentsOf(root *inode) map[*inode]*inode {
	m := map[*inode]*inode{root: root}
	var walk func(d *inode)
	walk = func(d *inode) {
		for _, c := range d.Children {
			if c.Ino.isDir() {
				m[c.Ino] = d
				walk(c.Ino)
			}
		}
	}
	walk(root)
	return m
}

// lookup finds the inode at an absolute image path.
func lookup(root *inode, p string) *inode {
	n := root
	for _, c := range strings.Split(strings.Trim(p, "/"), "/") {
		if c == "" {
			continue
		}
		if !n.isDir() {
			return nil
		}
		d := n.child(c)
		if d == nil {
			return nil
		}
		n = d.Ino
	}
	return n
}

func resolvePrefetch(root *inode, paths []string) ([]*inode, error) {
	var out []*inode
	for _, p := range paths {
		if p == "" {
			continue
		}
		n := lookup(root, p)
		if n == nil {
			return nil, fmt.Errorf("prefetch file %s is not in the image", p)
		}
		out = append(out, n)
	}
	return out, nil
}
