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

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/layout"
)

const (
	blockSize = layout.BlockSize
	tarBlock  = layout.TarBlockSize
	ciV1Size  = layout.CIV1Size
)

func align(v, a uint64) uint64 { return (v + a - 1) / a * a }

// blobInfo is what the bootstrap's blob table records about a blob (its
// Index and ChunkSize are filled in when the table is written).
type blobInfo = layout.BlobEntry

// blobWriter writes a native RAFS v6 blob (docs/rafs-format.md, "Blobs") to a
// temporary file, hashing it on the way for the blob id.
type blobWriter struct {
	f          *os.File
	w          *bufio.Writer
	idHash     hash.Hash // every byte but the raw blob.digest array
	fileHash   hash.Hash // every byte: the blob file's sha256 (its OCI layer digest)
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
		idHash: sha256.New(), fileHash: sha256.New(), secHash: sha256.New(), inData: true,
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
		b.fileHash.Write(r.data)
		b.fileHash.Write(b.pad[:r.pad])
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
	b.fileHash.Write(p)
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
	ci := layout.CIV1{UncompressedOffset: ref.UOff, UncompressedSize: ref.USize, CompressedOffset: ref.COff, CompressedSize: ref.CSize}
	b.ci = append(b.ci, make([]byte, ciV1Size)...)
	ci.Encode(b.ci[len(b.ci)-ciV1Size:])
	b.digests = append(b.digests, digest[:]...)
	return ref, nil
}

// fileDigest is the hex sha256 of every byte written so far (after finish:
// of the whole blob file).
func (b *blobWriter) fileDigest() string { return hex.EncodeToString(b.fileHash.Sum(nil)) }

// tarHeader is the GNU tar header nydus writes after each section.
func tarHeader(name string, size uint64) []byte {
	h := make([]byte, tarBlock)
	(&layout.TarHeader{Name: name, Size: size}).Encode(h)
	return h
}

// appendTOC appends a ToC entry to the blob's table of contents.
func (b *blobWriter) appendTOC(e layout.TOCEntry) {
	b.toc = append(b.toc, make([]byte, layout.TOCEntrySize)...)
	e.Encode(b.toc[len(b.toc)-layout.TOCEntrySize:])
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
	e := layout.TOCEntry{Flags: flags, Name: tocName, CompressedOffset: start, CompressedSize: csize, UncompressedSize: usize}
	copy(e.SHA256[:], digest)
	b.appendTOC(e)
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
	info := blobInfo{ChunkCount: uint32(len(b.ci) / ciV1Size), Compressor: compressorAlgo(b.compressor),
		Digester: digesterAlgo(b.digester), UncompressedSize: b.uoff}
	if b.v5 {
		if err := b.w.Flush(); err != nil {
			return blobInfo{}, nil, fmt.Errorf("write blob: %w", err)
		}
		info.ID, info.CompressedSize = hex.EncodeToString(b.idHash.Sum(nil)), b.off
		return info, nil, nil
	}
	info.Features = layout.BlobAligned | layout.BlobInlinedDigest | layout.BlobHasTarHeader | layout.BlobHasTOC | layout.BlobCapTarTOC
	if inline != nil {
		info.Features |= layout.BlobInlinedFSMeta
	}
	if err := b.section("image.blob", "image.blob", 0, b.off, b.uoff, layout.TOCCompressNone, nil); err != nil {
		return blobInfo{}, nil, err
	}
	if err := b.writeMeta(&info); err != nil {
		return blobInfo{}, nil, err
	}
	var boot []byte
	if inline != nil {
		var err error
		if boot, err = b.writeInlineBoot(info, inline); err != nil {
			return blobInfo{}, nil, err
		}
	}
	toc := append(b.toc, tarHeader(layout.TOCName, uint64(len(b.toc)))...)
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

// writeMeta writes the blob.meta section (the ci array, stored
// uncompressed, and its 4 KiB header) and the blob.digest section, and
// records the ci array in info.
func (b *blobWriter) writeMeta(info *blobInfo) error {
	ciOff, ciSize := b.off, uint64(len(b.ci))
	ciDigest := sha256.Sum256(b.ci)
	if err := b.write(b.ci, true); err != nil {
		return err
	}
	hdr := make([]byte, layout.BlobMetaHdrSize)
	h := layout.BlobMetaHeader{Magic: layout.BlobMetaMagic, Features: info.Features, CICompressor: layout.CompressNone,
		CIEntries: info.ChunkCount, CIOffset: ciOff, CICompressedSize: ciSize, CIUncompSize: ciSize, Magic2: layout.BlobMetaMagic}
	h.Encode(hdr)
	hdrDigest := sha256.Sum256(hdr)
	if err := b.write(hdr, true); err != nil {
		return err
	}
	if err := b.section("blob.meta", "blob.meta", ciOff, ciSize, ciSize, layout.TOCCompressNone, ciDigest[:]); err != nil {
		return err
	}
	// The ToC has one entry per section; blob.meta.header is an extra one.
	b.appendTOC(layout.TOCEntry{Flags: layout.TOCCompressNone, Name: "blob.meta.header", SHA256: hdrDigest,
		CompressedOffset: ciOff + ciSize, CompressedSize: layout.BlobMetaHdrSize, UncompressedSize: layout.BlobMetaHdrSize})

	digOff, digSize := b.off, uint64(len(b.digests))
	digDigest := sha256.Sum256(b.digests)
	if err := b.write(b.digests, false); err != nil {
		return err
	}
	if err := b.section("blob.digest", "blob.digest", digOff, digSize, digSize, layout.TOCCompressNone, digDigest[:]); err != nil {
		return err
	}
	info.CICompressor, info.CIOffset, info.CICompressedSize, info.CIUncompressed = layout.CompressNone, ciOff, ciSize, ciSize
	return nil
}

// writeInlineBoot writes the image.boot section: the bootstrap inline
// makes for this blob, zstd-compressed. The bootstrap records the blob's
// final size, which depends on the compressed bootstrap. Iterating to a
// fixed point can oscillate (a different size field compresses one byte
// longer or shorter), so the recorded size only grows, and a compressed
// bootstrap that comes out short is padded to it with a zstd skippable
// frame, which every zstd decoder steps over.
func (b *blobWriter) writeInlineBoot(info blobInfo, inline func(self blobInfo) ([]byte, error)) ([]byte, error) {
	c, err := newCompressor(CompressZstd)
	if err != nil {
		return nil, err
	}
	self := info
	self.ID = inlinePlaceholderID
	self.TOCSize = uint32(len(b.toc) + layout.TOCEntrySize + tarBlock) // + image.boot
	var boot, z []byte
	for i := 0; ; i++ {
		if boot, err = inline(self); err != nil {
			return nil, err
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
			return nil, fmt.Errorf("inline bootstrap: blob size does not settle")
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
		return nil, err
	}
	if err := b.section("image.boot", "image.boot", bootOff, uint64(len(z)), uint64(len(boot)), layout.TOCCompressZstd, bootDigest[:]); err != nil {
		return nil, err
	}
	return boot, nil
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
