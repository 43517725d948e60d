package builder

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/layout"
)

// MergeLayer is one layer of a merged image: the bootstrap of a build of
// that layer alone, made with WhiteoutSpec "none" so that the OCI whiteout
// entries (.wh.NAME, .wh..wh..opq) are still files in it, and the id its
// blob is known by in the merged image (for a registry image, the blob
// layer's digest, which is what nydusd fetches).
type MergeLayer struct {
	Bootstrap string
	BlobID    string
}

// Merge writes the bootstrap of the image made of layers applied in order
// (nydus-image merge): each layer's whiteouts and opaque markers delete from
// the layers below, directories merge, anything else replaces. The blob
// table lists each layer's blob (a layer that has none adds none) under its
// MergeLayer.BlobID, so layers built independently (in parallel, cached by
// their source) become one image. opts gives the RAFS version, chunk size
// and digester the layers must share, and the prefetch list; its source
// fields are unused.
func Merge(ctx context.Context, layers []MergeLayer, bootstrapPath string, opts Options) (*Result, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	root := &inode{Mode: modeDir | 0o755, implicit: true}
	var blobs, dict []blobInfo
	if opts.ChunkDict != "" {
		d, err := loadChunkDict(ctx, opts.ChunkDict, &opts)
		if err != nil {
			return nil, err
		}
		dict = d.blobs
		blobs = append(blobs, dict...)
	}
	for i, l := range layers {
		upper, lblobs, err := mergeLayerTree(ctx, l, &opts, uint32(len(blobs)), dict)
		if err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i, l.Bootstrap, err)
		}
		if len(blobs)+len(lblobs) > 255 {
			return nil, fmt.Errorf("%d layers with blobs: RAFS chunk addresses allow 255", len(blobs)+len(lblobs))
		}
		blobs = append(blobs, lblobs...)
		mergeLayer(root, upper)
	}
	img := newImage(root, blobs, &opts)
	var err error
	if img.prefetch, err = resolvePrefetch(root, opts.PrefetchFiles); err != nil {
		return nil, err
	}
	var boot []byte
	if opts.FsVersion == 5 {
		boot, err = writeV5(img, opts.Digester)
	} else {
		boot, err = writeV6(img)
	}
	if err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(bootstrapPath), "."+filepath.Base(bootstrapPath)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("write bootstrap: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(boot)
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(tmp.Name(), 0o644)
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), bootstrapPath)
	}
	if werr != nil {
		return nil, fmt.Errorf("write bootstrap: %w", werr)
	}
	res := &Result{BootstrapPath: bootstrapPath, Stats: Stats{Inodes: len(img.inodes)}}
	for _, b := range blobs {
		res.BlobIDs = append(res.BlobIDs, b.ID)
	}
	return res, nil
}

// mergeLayerTree reads one layer's bootstrap into a layer tree: its blob
// (at most one) renamed to l.BlobID and placed at blob index base, and the
// whiteout files turned back into whiteouts and opaque marks. A layer
// built with a chunk dictionary lists the dictionary's blobs first, which
// the merged table also has first: its chunks there keep their index.
func mergeLayerTree(ctx context.Context, l MergeLayer, opts *Options, base uint32, dict []blobInfo) (*inode, []blobInfo, error) {
	img, err := rafs.Open(l.Bootstrap, rafs.Options{RecordedOwners: true, ChunkCacheSize: -1})
	if err != nil {
		return nil, nil, err
	}
	defer img.Close()
	t, err := imageTree(ctx, img, opts, parentBlobUnsupported&^layout.BlobInlinedFSMeta)
	if err != nil {
		return nil, nil, err
	}
	k := len(dict)
	if len(t.blobs) > k+1 {
		return nil, nil, fmt.Errorf("%d blobs: a layer built alone has at most one (beside the chunk dictionary's %d)", len(t.blobs), k)
	}
	for i := 0; i < k; i++ {
		if i >= len(t.blobs) || t.blobs[i].ID != dict[i].ID {
			return nil, nil, fmt.Errorf("the layer was not built with this chunk dictionary (blob %d)", i)
		}
	}
	t.blobs = t.blobs[k:]
	for i := range t.blobs {
		if l.BlobID == "" {
			return nil, nil, fmt.Errorf("the layer has a blob but no blob id was given")
		}
		t.blobs[i].ID = l.BlobID
		// The merged bootstrap is not inside the blob, and the flag would
		// make readers name the blob after the bootstrap's file.
		t.blobs[i].Features &^= layout.BlobInlinedFSMeta
	}
	for _, n := range dataOrder(t.root) {
		for i := range n.Chunks {
			if c := &n.Chunks[i]; c.BlobIndex >= uint32(k) {
				c.BlobIndex = c.BlobIndex - uint32(k) + base
			}
		}
	}
	if err := undoWhiteoutFiles(t.root); err != nil {
		return nil, nil, err
	}
	return t.root, t.blobs, nil
}

// undoWhiteoutFiles turns the OCI whiteout entries a layer bootstrap kept
// as files into the directory's whiteout list and opaque mark, in every
// directory of the tree.
func undoWhiteoutFiles(d *inode) error {
	kept := d.Children[:0:0]
	for _, c := range d.Children {
		if isWhiteoutName(WhiteoutOCI, d, c.Name) {
			if c.Ino.isDir() {
				return fmt.Errorf("whiteout %q is a directory", c.Name)
			}
			continue
		}
		kept = append(kept, c)
	}
	d.Children = kept
	for _, c := range d.Children {
		if c.Ino.isDir() && !strings.HasPrefix(c.Name, whiteoutPrefix) {
			if err := undoWhiteoutFiles(c.Ino); err != nil {
				return err
			}
		}
	}
	return nil
}
