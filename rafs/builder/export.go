package builder

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
)

// ExportBlock writes the "flat" block-device view of a RAFS v6 image (what
// nydus-image export --block makes): the bootstrap, then each blob's
// uncompressed data image at its device slot's mapped_blkaddr. The Linux
// EROFS driver mounts the result as a single device, without device=
// options. Blobs are read from blobDir/<blob id> and may be compressed.
func ExportBlock(bootstrapPath, blobDir, out string) (err error) {
	boot, err := os.ReadFile(bootstrapPath)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	pi, err := decodeParent(boot)
	if err != nil {
		return fmt.Errorf("export %s: %w", bootstrapPath, err)
	}
	le := binary.LittleEndian
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
		base   uint64
		blob   *os.File
		algo   string
		blocks uint64
	}
	devs := make([]dev, len(pi.blobs))
	var end uint64 = uint64(len(boot))
	for i, b := range pi.blobs {
		slot := boot[devtSlotOff*devSlotSize+i*devSlotSize:]
		devs[i].base = uint64(le.Uint32(slot[68:])) * blockSize
		devs[i].blocks = uint64(le.Uint32(slot[64:]))
		if devs[i].base < uint64(len(boot)) {
			return fmt.Errorf("export: blob %d has no room at mapped_blkaddr %d", i, devs[i].base/blockSize)
		}
		end = max(end, devs[i].base+devs[i].blocks*blockSize)
		switch le.Uint32(b.Raw[76:]) {
		case algoNone:
			devs[i].algo = CompressNone
		case algoLZ4:
			devs[i].algo = CompressLZ4
		case algoZstd:
			devs[i].algo = CompressZstd
		default:
			return fmt.Errorf("export: blob %d: unsupported compressor %d", i, le.Uint32(b.Raw[76:]))
		}
		bf, err := os.Open(filepath.Join(blobDir, b.ID))
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		defer bf.Close()
		devs[i].blob = bf
	}
	for _, c := range pi.chunks {
		d := devs[c.BlobIndex]
		raw := make([]byte, c.CSize)
		if _, err := d.blob.ReadAt(raw, int64(c.COff)); err != nil {
			return fmt.Errorf("export: blob %d chunk %d: %w", c.BlobIndex, c.CI, err)
		}
		data := raw
		if c.Compressed {
			if data, err = decompress(d.algo, raw, int(c.USize)); err != nil || len(data) != int(c.USize) {
				return fmt.Errorf("export: blob %d chunk %d: decompress: %v", c.BlobIndex, c.CI, err)
			}
		}
		if _, err := f.WriteAt(data, int64(d.base+c.UOff)); err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}
	if err := f.Truncate(int64(end)); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return os.Rename(f.Name(), out)
}
