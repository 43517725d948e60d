package rafs

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"lukechampine.com/blake3"
)

// codecs holds the decoders an image shares between concurrent reads.
// The zstd decoder is made on first use: most images never need it.
type codecs struct {
	once    sync.Once
	zstd    *zstd.Decoder
	zstdErr error
}

func newCodecs() (*codecs, error) { return &codecs{}, nil }

func (c *codecs) zstdDecoder() (*zstd.Decoder, error) {
	c.once.Do(func() {
		c.zstd, c.zstdErr = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(maxChunkSize*2), zstd.WithDecoderMaxWindow(maxChunkSize*2))
		if c.zstdErr != nil {
			c.zstdErr = fmt.Errorf("zstd decoder: %w", c.zstdErr)
		}
	})
	return c.zstd, c.zstdErr
}

func (c *codecs) close() {
	c.once.Do(func() {}) // no decoder may be made after close
	if c.zstd != nil {
		c.zstd.Close()
	}
}

// decompress decodes src, which must expand to exactly usize bytes.
func (c *codecs) decompress(algo Compression, src []byte, usize uint64) ([]byte, error) {
	if usize > maxBootstrapSize {
		return nil, formatErr("decompressed size %d is too large", usize)
	}
	// Refuse sizes no compressor could reach from len(src) bytes, so that
	// a crafted size never makes us allocate much more than we read.
	if usize > maxChunkSize && usize > uint64(len(src))*maxRatio(algo)+1024 {
		return nil, formatErr("%s: %d bytes cannot expand to %d", algo, len(src), usize)
	}
	switch algo {
	case CompressNone:
		if uint64(len(src)) != usize {
			return nil, formatErr("uncompressed data of %d bytes, want %d", len(src), usize)
		}
		return src, nil
	case CompressLZ4:
		dst := make([]byte, usize)
		n, err := lz4.UncompressBlock(src, dst)
		if err != nil {
			return nil, fmt.Errorf("%w: lz4_block: %v", ErrFormat, err)
		}
		if uint64(n) != usize {
			return nil, formatErr("lz4_block: %d bytes, want %d", n, usize)
		}
		return dst, nil
	case CompressZstd:
		var dec *zstd.Decoder
		if usize <= maxChunkSize {
			d, err := c.zstdDecoder()
			if err != nil {
				return nil, err
			}
			dec = d
		} else {
			// Large objects (an inlined bootstrap) get their own decoder.
			d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(usize+1))
			if err != nil {
				return nil, fmt.Errorf("zstd decoder: %w", err)
			}
			defer d.Close()
			dec = d
		}
		var dst []byte
		if usize <= maxChunkSize {
			dst = make([]byte, 0, usize)
		}
		out, err := dec.DecodeAll(src, dst)
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", ErrFormat, err)
		}
		if uint64(len(out)) != usize {
			return nil, formatErr("zstd: %d bytes, want %d", len(out), usize)
		}
		return out, nil
	case CompressGzip:
		r, err := gzip.NewReader(bytes.NewReader(src))
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrFormat, err)
		}
		r.Multistream(false)
		dst := make([]byte, usize)
		if _, err := io.ReadFull(r, dst); err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrFormat, err)
		}
		if n, _ := r.Read(make([]byte, 1)); n != 0 {
			return nil, formatErr("gzip: more than %d bytes", usize)
		}
		return dst, nil
	}
	return nil, formatErr("unknown compression %d", uint32(algo))
}

// digest computes a chunk digest.
func digest(algo DigestAlgo, data []byte) ([32]byte, error) {
	switch algo {
	case DigestBlake3:
		return blake3.Sum256(data), nil
	case DigestSHA256:
		return sha256.Sum256(data), nil
	}
	return [32]byte{}, formatErr("unknown digest algorithm %d", uint32(algo))
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// verifyChunk checks uncompressed chunk bytes against what ci says.
func verifyChunk(algo DigestAlgo, ci *ChunkInfo, data []byte) error {
	if ci.Flags&ciHasCRC32 != 0 && ci.CRC32 != 0 {
		if got := crc32.Checksum(data, castagnoli); got != ci.CRC32 {
			return fmt.Errorf("chunk %d: crc32c %08x, want %08x", ci.Index, got, ci.CRC32)
		}
		return nil
	}
	if !ci.HasDigest {
		return nil
	}
	got, err := digest(algo, data)
	if err != nil {
		return err
	}
	if got != ci.Digest {
		return fmt.Errorf("chunk %d: %s digest %x, want %x", ci.Index, algo, got, ci.Digest)
	}
	return nil
}

// maxRatio is the largest expansion an algorithm can produce.
func maxRatio(algo Compression) uint64 {
	switch algo {
	case CompressLZ4:
		return 255
	case CompressGzip:
		return 1032
	case CompressZstd:
		return 1 << 17 // zstd RLE blocks: bounded by the decoder's memory limit instead
	}
	return 1
}
