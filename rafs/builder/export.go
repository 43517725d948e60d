package builder

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs"
)

// ExportBlock writes the "flat" block-device view of a RAFS v6 image (what
// nydus-image export --block makes): the bootstrap, then each blob's
// uncompressed data image at its device slot's mapped_blkaddr. The Linux
// EROFS driver mounts the result as a single device, without device=
// options. Blobs are read from blobDir/<blob id> and may be compressed.
// The image is read through the rafs reader; every chunk a file uses is
// written once.
func ExportBlock(bootstrapPath, blobDir, out string) (err error) {
	boot, err := os.ReadFile(bootstrapPath)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	img, err := rafs.OpenBytes(boot, bootstrapPath, rafs.Options{ChunkCacheSize: -1})
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer img.Close()
	if img.Version() != 6 || img.BootstrapSize() != len(boot) {
		return fmt.Errorf("export %s: not a RAFS v6 bootstrap file", bootstrapPath)
	}
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer func() {
		f.Close()
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(boot); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	type dev struct {
		base uint64
		blob *os.File
		algo string
	}
	blobs := img.Blobs()
	devs := make([]dev, len(blobs))
	end := uint64(len(boot))
	for i, b := range blobs {
		devs[i].base = uint64(b.MappedBlockAddr) * blockSize
		if devs[i].base < uint64(len(boot)) {
			return fmt.Errorf("export: blob %d has no room at mapped_blkaddr %d", i, b.MappedBlockAddr)
		}
		end = max(end, devs[i].base+uint64(b.DeviceBlocks)*blockSize)
		switch b.Compression {
		case rafs.CompressNone:
			devs[i].algo = CompressNone
		case rafs.CompressLZ4:
			devs[i].algo = CompressLZ4
		case rafs.CompressZstd:
			devs[i].algo = CompressZstd
		default:
			return fmt.Errorf("export: blob %d: unsupported compressor %s", i, b.Compression)
		}
		bf, err := os.Open(filepath.Join(blobDir, b.ID))
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		defer bf.Close()
		devs[i].blob = bf
	}
	written := map[[2]uint64]bool{} // (blob, uncompressed offset)
	put := func(c rafs.Chunk) error {
		key := [2]uint64{uint64(c.BlobIndex), c.UncompressedOffset}
		if written[key] {
			return nil
		}
		written[key] = true
		d := devs[c.BlobIndex]
		raw := make([]byte, c.CompressedSize)
		if _, err := d.blob.ReadAt(raw, int64(c.CompressedOffset)); err != nil {
			return fmt.Errorf("blob %d chunk %d: %w", c.BlobIndex, c.Index, err)
		}
		data := raw
		if c.Compressed {
			if data, err = decompress(d.algo, raw, int(c.UncompressedSize)); err != nil || len(data) != int(c.UncompressedSize) {
				return fmt.Errorf("blob %d chunk %d: decompress: %v", c.BlobIndex, c.Index, err)
			}
		}
		_, err := f.WriteAt(data, int64(d.base+c.UncompressedOffset))
		return err
	}
	err = img.Walk(func(p string, n *rafs.Inode) error {
		if !n.IsRegular() {
			return nil
		}
		if err := img.Chunks(context.Background(), n.Ino, put); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := f.Truncate(int64(end)); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return os.Rename(f.Name(), out)
}
