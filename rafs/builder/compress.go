package builder

import (
	"crypto/sha256"
	"fmt"

	"github.com/klauspost/compress/zstd"
	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/layout"
	"github.com/pierrec/lz4/v4"
	"lukechampine.com/blake3"
)

// compressorAlgo is the blob-table number of a compressor name.
func compressorAlgo(c string) layout.Compression {
	switch c {
	case CompressLZ4:
		return layout.CompressLZ4
	case CompressZstd:
		return layout.CompressZstd
	}
	return layout.CompressNone
}

// digesterAlgo is the blob-table number of a digester name.
func digesterAlgo(d string) layout.DigestAlgo {
	if d == DigestSHA256 {
		return layout.DigestSHA256
	}
	return layout.DigestBlake3
}

// chunkDigest hashes uncompressed chunk bytes with the image's digester.
func chunkDigest(digester string, b []byte) [32]byte {
	if digester == DigestSHA256 {
		return sha256.Sum256(b)
	}
	return blake3.Sum256(b)
}

// compressor compresses one chunk at a time; each worker owns one.
type compressor struct {
	algo string
	zenc *zstd.Encoder
	lz   lz4.Compressor
}

func newCompressor(algo string) (*compressor, error) {
	c := &compressor{algo: algo}
	if algo == CompressZstd {
		// nydus-image compresses each chunk as one frame with libzstd's
		// default level (3), the level SpeedDefault stands for, and without
		// a content checksum (the chunk digest covers the data).
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderCRC(false))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		c.zenc = enc
	}
	return c, nil
}

// compress returns the compressed form of src in dst's storage, or nil when
// the chunk is stored raw (no compressor, or compression does not shrink it).
func (c *compressor) compress(dst, src []byte) ([]byte, error) {
	switch c.algo {
	case CompressZstd:
		out := c.zenc.EncodeAll(src, dst[:0])
		if len(out) >= len(src) {
			return nil, nil
		}
		return out, nil
	case CompressLZ4:
		if cap(dst) < lz4.CompressBlockBound(len(src)) {
			dst = make([]byte, lz4.CompressBlockBound(len(src)))
		}
		n, err := c.lz.CompressBlock(src, dst[:cap(dst)])
		if err != nil {
			return nil, fmt.Errorf("lz4: %w", err)
		}
		if n == 0 || n >= len(src) {
			return nil, nil
		}
		return dst[:n], nil
	}
	return nil, nil
}

// decompress undoes compress for a chunk of usize bytes (used by tests and
// by the blob reader helpers).
func decompress(algo string, src []byte, usize int) ([]byte, error) {
	switch algo {
	case CompressZstd:
		dec, err := zstd.NewReader(nil)
		if err != nil {
			return nil, err
		}
		defer dec.Close()
		return dec.DecodeAll(src, make([]byte, 0, usize))
	case CompressLZ4:
		out := make([]byte, usize)
		n, err := lz4.UncompressBlock(src, out)
		if err != nil {
			return nil, err
		}
		return out[:n], nil
	}
	return src, nil
}
