package builder

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync/atomic"
)

// Blob feature bits (rafs-format.md §0.2).
const (
	blobFeatAligned       = 0x0000_0001
	blobFeatInlinedFsMeta = 0x0000_0002
	blobFeatZran          = 0x0000_0008
	blobFeatSeparate      = 0x0000_0010
	blobFeatInlinedDigest = 0x0000_0020
	blobFeatTarfs         = 0x0000_0040
	blobFeatBatch         = 0x0000_0080
	blobFeatEncrypted     = 0x0000_0100
	blobFeatExternal      = 0x0000_0800
	blobFeatV5NoExtTable  = 0x8000_0000 // the reader's mark for a v5 blob without an extended entry
	blobFeatHasTarHeader  = 0x1000_0000
	blobFeatHasTOC        = 0x2000_0000
	blobFeatCapTarTOC     = 0x4000_0000

	blobMetaMagic   = 0xB10BB10B
	blockSize       = 4096
	tarBlock        = 512
	ciV1Size        = 16
	tocEntrySize    = 128
	tocFlagNone     = 0x1
	tocFlagZstd     = 0x2
	blobMetaHdrSize = 4096
)

func align(v, a uint64) uint64 { return (v + a - 1) / a * a }

// blobInfo is what the bootstrap's blob table records about a blob.
type blobInfo struct {
	ID               string
	ChunkCount       uint32
	Compressor       uint32
	Digester         uint32
	Features         uint32
	CompressedSize   uint64
	UncompressedSize uint64
	TOCSize          uint32
	CICompressor     uint32
	CIOffset         uint64
	CICompressedSize uint64
	CIUncompressed   uint64
	TOCDigest        [32]byte
}

// blobWriter writes a native RAFS v6 blob (rafs-format.md §3.2) to a
// temporary file, hashing it on the way for the blob id.
type blobWriter struct {
	f          *os.File
	w          *bufio.Writer
	idHash     hash.Hash // every byte but the raw blob.digest array
	secHash    hash.Hash // the current metadata section, for the ToC
	inData     bool      // writing chunk data: idHash alone covers it
	off        uint64
	uoff       uint64 // next uncompressed offset
	compressor string
	digester   string
	v5         bool   // RAFS v5: chunk data only, packed, named by sha256
	ci         []byte // ci v1 array
	digests    []byte // blob.digest array
	toc        []byte
	pad        [blockSize]byte

	// Chunk data is written in place (pwrite; alignment gaps stay holes,
	// which read as zeros) and hashed for the blob id by a goroutine of its
	// own, so that sha256 overlaps with reading, writing and chunk hashing.
	q     chan dataWrite
	qdone chan struct{}
	qerr  atomic.Pointer[error]
}

// dataWrite is chunk data (plus zero padding) queued for the blob-id hash;
// done releases its buffer.
type dataWrite struct {
	data []byte
	pad  int
	done func()
}

func newBlobWriter(f *os.File, compressor, digester string) *blobWriter {
	b := &blobWriter{
		f: f, w: bufio.NewWriterSize(f, 1<<20),
		idHash: sha256.New(), secHash: sha256.New(), inData: true,
		compressor: compressor, digester: digester,
		q: make(chan dataWrite, 16), qdone: make(chan struct{}),
	}
	go b.dataWriter()
	return b
}

func (b *blobWriter) dataWriter() {
	defer close(b.qdone)
	for r := range b.q {
		b.idHash.Write(r.data)
		b.idHash.Write(b.pad[:r.pad])
		if r.done != nil {
			r.done()
		}
	}
}

// dataErr is the first error the data writer met, if any.
func (b *blobWriter) dataErr() error {
	if e := b.qerr.Load(); e != nil {
		return *e
	}
	return nil
}

// endData waits for every queued chunk to be written. Calling it twice is
// harmless.
func (b *blobWriter) endData() error {
	if b.q != nil {
		close(b.q)
		<-b.qdone
		b.q = nil
		// the metadata sections follow, written sequentially
		if _, err := b.f.Seek(int64(b.off), io.SeekStart); err != nil {
			err = fmt.Errorf("write blob: %w", err)
			b.qerr.Store(&err)
		}
	}
	return b.dataErr()
}

func (b *blobWriter) write(p []byte, forID bool) error {
	if _, err := b.w.Write(p); err != nil {
		return fmt.Errorf("write blob: %w", err)
	}
	if forID {
		b.idHash.Write(p)
	}
	if !b.inData {
		b.secHash.Write(p)
	}
	b.off += uint64(len(p))
	return nil
}

// addChunk appends one chunk. comp is its compressed form, or nil to store
// raw. Raw chunks of an uncompressed blob sit at their aligned uncompressed
// offset, so the data section is the uncompressed image itself. The bytes
// are written asynchronously; release is called once they are no longer
// needed.
func (b *blobWriter) addChunk(raw, comp []byte, digest [32]byte, release func()) (chunkRef, error) {
	if err := b.dataErr(); err != nil {
		release()
		return chunkRef{}, err
	}
	ref := chunkRef{Digest: digest, CI: uint32(len(b.ci) / ciV1Size), USize: uint32(len(raw))}
	data := raw
	if comp != nil {
		data = comp
		ref.Compressed = true
	}
	aligned := b.compressor == CompressNone && !b.v5
	if aligned {
		b.uoff = b.off
	}
	ref.COff, ref.CSize, ref.UOff = b.off, uint32(len(data)), b.uoff
	if _, err := b.f.WriteAt(data, int64(b.off)); err != nil {
		release()
		err = fmt.Errorf("write blob: %w", err)
		b.qerr.Store(&err)
		return chunkRef{}, err
	}
	b.off += uint64(len(data))
	if b.v5 {
		b.uoff += uint64(len(raw))
	} else {
		b.uoff += align(uint64(len(raw)), blockSize)
	}
	pad := 0
	if aligned {
		pad = int(b.uoff - b.off)
		b.off = b.uoff
	}
	b.q <- dataWrite{data: data, pad: pad, done: release}
	b.ci = binary.LittleEndian.AppendUint64(b.ci, ciUncompInfo(ref.UOff, ref.USize))
	b.ci = binary.LittleEndian.AppendUint64(b.ci, ciCompInfo(ref.COff, ref.CSize))
	b.digests = append(b.digests, digest[:]...)
	return ref, nil
}

func ciUncompInfo(uoff uint64, usize uint32) uint64 {
	s := uint64(usize - 1)
	return uoff&0xFFF_FFFF_F000 | (s>>20&0xf)<<8 | (s&0xFFFFF)<<44
}

func ciCompInfo(coff uint64, csize uint32) uint64 {
	s := uint64(csize - 1)
	return coff&0xFF_FFFF_FFFF | (s>>20&0xf)<<40 | (s&0xFFFFF)<<44
}

// tarHeader is the GNU tar header nydus writes after each section: name,
// size, zero mtime, checksum, type '0', magic "ustar  ".
func tarHeader(name string, size uint64) []byte {
	h := make([]byte, tarBlock)
	copy(h, name)
	copy(h[124:136], fmt.Sprintf("%011o", size))
	copy(h[136:148], "00000000000")
	copy(h[148:156], "        ")
	h[156] = '0'
	copy(h[257:265], "ustar  \x00")
	var sum uint64
	for _, c := range h {
		sum += uint64(c)
	}
	copy(h[148:156], fmt.Sprintf("%07o\x00", sum))
	return h
}

// section ends the current section: writes its tar header and a ToC entry.
func (b *blobWriter) section(tarName, tocName string, start, csize, usize uint64, flags uint32, digest []byte) error {
	if err := b.write(tarHeader(tarName, b.off-start), true); err != nil {
		return err
	}
	if b.inData {
		// image.blob: data plus its tar header, the blob's first bytes, so
		// the blob-id hash so far is that digest (Sum leaves it running)
		digest = b.idHash.Sum(nil)
		b.inData = false
	}
	e := make([]byte, tocEntrySize)
	binary.LittleEndian.PutUint32(e[0:], flags)
	copy(e[8:24], tocName)
	copy(e[24:56], digest)
	binary.LittleEndian.PutUint64(e[56:], start)
	binary.LittleEndian.PutUint64(e[64:], csize)
	binary.LittleEndian.PutUint64(e[72:], usize)
	b.toc = append(b.toc, e...)
	b.secHash.Reset()
	return nil
}

// inlinePlaceholderID is the blob id an inlined bootstrap records for its
// own blob (nydus uses the containing file's name instead).
var inlinePlaceholderID = strings.Repeat("x", 64)

// finish writes the metadata sections and the ToC and returns the blob's
// table entry. With inline non-nil the bootstrap it makes (given the blob's
// own entry, with a placeholder id and no ToC digest) is stored as
// image.boot, zstd-compressed, and returned.
func (b *blobWriter) finish(inline func(self blobInfo) ([]byte, error)) (blobInfo, []byte, error) {
	if err := b.endData(); err != nil {
		return blobInfo{}, nil, err
	}
	if b.v5 {
		if err := b.w.Flush(); err != nil {
			return blobInfo{}, nil, fmt.Errorf("write blob: %w", err)
		}
		return blobInfo{ID: hex.EncodeToString(b.idHash.Sum(nil)), ChunkCount: uint32(len(b.ci) / ciV1Size),
			Compressor: compressorAlgo(b.compressor), Digester: digesterAlgo(b.digester),
			CompressedSize: b.off, UncompressedSize: b.uoff}, nil, nil
	}
	features := uint32(blobFeatAligned | blobFeatInlinedDigest | blobFeatHasTarHeader | blobFeatHasTOC | blobFeatCapTarTOC)
	if inline != nil {
		features |= blobFeatInlinedFsMeta
	}
	n := uint64(len(b.ci) / ciV1Size)
	dataSize := b.off
	if err := b.section("image.blob", "image.blob", 0, dataSize, b.uoff, tocFlagNone, nil); err != nil {
		return blobInfo{}, nil, err
	}
	// blob.meta: ci array (stored uncompressed) + 4 KiB header.
	ciOff := b.off
	ciDigest := sha256.Sum256(b.ci)
	if err := b.write(b.ci, true); err != nil {
		return blobInfo{}, nil, err
	}
	hdr := make([]byte, blobMetaHdrSize)
	binary.LittleEndian.PutUint32(hdr[0:], blobMetaMagic)
	binary.LittleEndian.PutUint32(hdr[4:], features)
	binary.LittleEndian.PutUint32(hdr[8:], algoNone)
	binary.LittleEndian.PutUint32(hdr[12:], uint32(n))
	binary.LittleEndian.PutUint64(hdr[16:], ciOff)
	binary.LittleEndian.PutUint64(hdr[24:], uint64(len(b.ci)))
	binary.LittleEndian.PutUint64(hdr[32:], uint64(len(b.ci)))
	binary.LittleEndian.PutUint32(hdr[4092:], blobMetaMagic)
	hdrDigest := sha256.Sum256(hdr)
	if err := b.write(hdr, true); err != nil {
		return blobInfo{}, nil, err
	}
	metaHdrOff := ciOff + uint64(len(b.ci))
	if err := b.section("blob.meta", "blob.meta", ciOff, uint64(len(b.ci)), uint64(len(b.ci)), tocFlagNone, ciDigest[:]); err != nil {
		return blobInfo{}, nil, err
	}
	// The ToC has one entry per section; blob.meta.header is an extra one.
	e := make([]byte, tocEntrySize)
	binary.LittleEndian.PutUint32(e[0:], tocFlagNone)
	copy(e[8:24], "blob.meta.header")
	copy(e[24:56], hdrDigest[:])
	binary.LittleEndian.PutUint64(e[56:], metaHdrOff)
	binary.LittleEndian.PutUint64(e[64:], blobMetaHdrSize)
	binary.LittleEndian.PutUint64(e[72:], blobMetaHdrSize)
	b.toc = append(b.toc, e...)

	digOff := b.off
	digDigest := sha256.Sum256(b.digests)
	if err := b.write(b.digests, false); err != nil {
		return blobInfo{}, nil, err
	}
	if err := b.section("blob.digest", "blob.digest", digOff, uint64(len(b.digests)), uint64(len(b.digests)), tocFlagNone, digDigest[:]); err != nil {
		return blobInfo{}, nil, err
	}
	info := blobInfo{
		ChunkCount:       uint32(n),
		Compressor:       compressorAlgo(b.compressor),
		Digester:         digesterAlgo(b.digester),
		Features:         features,
		UncompressedSize: b.uoff,
		CICompressor:     algoNone,
		CIOffset:         ciOff,
		CICompressedSize: uint64(len(b.ci)),
		CIUncompressed:   uint64(len(b.ci)),
	}
	var boot []byte
	if inline != nil {
		c, err := newCompressor(CompressZstd)
		if err != nil {
			return blobInfo{}, nil, err
		}
		// The bootstrap records the blob's final size, which depends on the
		// compressed bootstrap. Iterating to a fixed point can oscillate (a
		// different size field compresses one byte longer or shorter), so the
		// recorded size only grows, and a compressed bootstrap that comes out
		// short is padded to it with a zstd skippable frame, which every zstd
		// decoder steps over.
		self := info
		self.ID = inlinePlaceholderID
		self.TOCSize = uint32(len(b.toc) + tocEntrySize + tarBlock) // + image.boot
		var z []byte
		for i := 0; ; i++ {
			if boot, err = inline(self); err != nil {
				return blobInfo{}, nil, err
			}
			z = c.zenc.EncodeAll(boot, nil)
			size := b.off + uint64(len(z)) + tarBlock + uint64(self.TOCSize)
			if size < self.CompressedSize && self.CompressedSize-size >= skippableFrameMin {
				z = appendSkippableFrame(z, int(self.CompressedSize-size))
				size = self.CompressedSize
			}
			if size == self.CompressedSize {
				break
			}
			if i == 16 {
				return blobInfo{}, nil, fmt.Errorf("inline bootstrap: blob size does not settle")
			}
			if size > self.CompressedSize {
				self.CompressedSize = size
			} else {
				// Short by less than a skippable frame: leave room for one.
				self.CompressedSize += 2 * skippableFrameMin
			}
		}
		bootOff := b.off
		bootDigest := sha256.Sum256(boot)
		if err := b.write(z, true); err != nil {
			return blobInfo{}, nil, err
		}
		if err := b.section("image.boot", "image.boot", bootOff, uint64(len(z)), uint64(len(boot)), tocFlagZstd, bootDigest[:]); err != nil {
			return blobInfo{}, nil, err
		}
	}
	toc := append(b.toc, tarHeader("rafs.blob.toc", uint64(len(b.toc)))...)
	info.TOCSize = uint32(len(toc))
	info.TOCDigest = sha256.Sum256(toc)
	if err := b.write(toc, true); err != nil {
		return blobInfo{}, nil, err
	}
	if err := b.w.Flush(); err != nil {
		return blobInfo{}, nil, fmt.Errorf("write blob: %w", err)
	}
	info.ID = hex.EncodeToString(b.idHash.Sum(nil))
	info.CompressedSize = b.off
	return info, boot, nil
}

// skippableFrameMin is the size of an empty zstd skippable frame: a 4-byte
// magic and a 4-byte length.
const skippableFrameMin = 8

// appendSkippableFrame appends a zstd skippable frame of n bytes in all
// (n >= skippableFrameMin) to z.
func appendSkippableFrame(z []byte, n int) []byte {
	z = binary.LittleEndian.AppendUint32(z, 0x184D2A50)
	z = binary.LittleEndian.AppendUint32(z, uint32(n-skippableFrameMin))
	return append(z, make([]byte, n-skippableFrameMin)...)
}
