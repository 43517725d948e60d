package builder

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
	"sort"
)

// EROFS / RAFS v6 constants (rafs-format.md §1).
const (
	erofsMagic         = 0xE0F5E1E2
	erofsSBOffset      = 1024
	rafsV6CompatBit    = 0x4000_0000
	erofsIncompatRAFS  = 0x0000_000C // CHUNKED_FILE | DEVICE_TABLE
	devtSlotOff        = 11
	devSlotSize        = 128
	v6BlobEntrySize    = 256
	v6ChunkInfoSize    = 80
	inodeExtSize       = 64
	layoutFlatPlain    = 0
	layoutFlatInline   = 2
	layoutChunkBased   = 4
	chunkFormatIndexes = 0x20
	direntSize         = 12
	rootNid            = 128
	mappedAlign        = 512 << 10

	superFlagExplicitUIDGID = 0x10
	superFlagHasXattr       = 0x20
	superFlagInlinedDigest  = 0x100
)

// image is everything a bootstrap writer needs.
type image struct {
	root      *inode
	inodes    []*inode // unique inodes, BFS order, root first
	parents   map[*inode]*inode
	blobs     []blobInfo
	chunkSize uint32
	flags     uint64
	prefetch  []*inode
}

// xattrBody encodes an inode's inline xattrs (12-byte header + entries).
func xattrBody(xs []xattr) []byte {
	if len(xs) == 0 {
		return nil
	}
	b := make([]byte, 12)
	for _, x := range xs {
		idx, suffix, _ := xattrIndex(x.Name)
		e := []byte{uint8(len(suffix)), idx, 0, 0}
		binary.LittleEndian.PutUint16(e[2:], uint16(len(x.Value)))
		e = append(e, suffix...)
		e = append(e, x.Value...)
		for len(e)%4 != 0 {
			e = append(e, 0)
		}
		b = append(b, e...)
	}
	return b
}

type dirent struct {
	name string
	ino  *inode
}

// dirEntries lists a directory's entries, . and .. included, sorted by name.
func dirEntries(n, parent *inode) []dirent {
	ents := []dirent{{".", n}, {"..", parent}}
	for _, c := range n.Children {
		ents = append(ents, dirent{c.Name, c.Ino})
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].name < ents[j].name })
	return ents
}

// packDirents splits sorted entries into 4 KiB blocks; it returns the
// entry count of each block and the directory size.
func packDirents(ents []dirent) ([]int, uint64, error) {
	var counts []int
	used, cnt := 0, 0
	for _, e := range ents {
		need := direntSize + len(e.name)
		if need > blockSize {
			return nil, 0, fmt.Errorf("name %q too long", e.name)
		}
		if used+need > blockSize {
			counts = append(counts, cnt)
			used, cnt = 0, 0
		}
		used += need
		cnt++
	}
	counts = append(counts, cnt)
	return counts, uint64(len(counts)-1)*blockSize + uint64(used), nil
}

// encodeDirents writes the dirent blocks; the last one is not padded.
func encodeDirents(ents []dirent, counts []int) []byte {
	var out []byte
	k := 0
	for bi, cnt := range counts {
		blk := ents[k : k+cnt]
		k += cnt
		b := make([]byte, direntSize*cnt)
		nameOff := direntSize * cnt
		for i, e := range blk {
			binary.LittleEndian.PutUint64(b[i*direntSize:], e.ino.nid)
			binary.LittleEndian.PutUint16(b[i*direntSize+8:], uint16(nameOff))
			b[i*direntSize+10] = direntType(e.ino.Mode)
			nameOff += len(e.name)
		}
		for _, e := range blk {
			b = append(b, e.name...)
		}
		if bi != len(counts)-1 {
			b = append(b, make([]byte, blockSize-len(b))...)
		}
		out = append(out, b...)
	}
	return out
}

// v6Slot is an inode's placement in the metadata area.
type v6Slot struct {
	xattrs   []byte
	layout   int
	data     []byte // directory or symlink body
	dirCnt   []int
	dirEnts  []dirent
	tail     int    // bytes of data stored inline
	recSize  uint64 // inode + xattrs + inline tail or chunk indexes
	firstBlk uint32 // first non-inline data block
}

// writeV6 lays out and encodes a RAFS v6 bootstrap.
func writeV6(img *image) ([]byte, error) {
	nblobs := len(img.blobs)
	blobTableOff := align(uint64(devtSlotOff*devSlotSize+devSlotSize*nblobs), blockSize)
	blobTableSize := uint64(v6BlobEntrySize * nblobs)
	prefetchOff := blobTableOff + blobTableSize
	prefetchSize := uint64(4 * len(img.prefetch))
	metaBlk := align(prefetchOff+prefetchSize, blockSize) / blockSize
	metaBase := metaBlk * blockSize

	// Pass 1: sizes, layouts and nids.
	slots := make(map[*inode]*v6Slot, len(img.inodes))
	cursor := uint64(rootNid * 32)
	var plainBlocks []*inode
	for _, n := range img.inodes {
		s := &v6Slot{xattrs: xattrBody(n.Xattrs)}
		slots[n] = s
		head := uint64(inodeExtSize + len(s.xattrs))
		var dataLen uint64
		switch {
		case n.isDir():
			s.dirEnts = dirEntries(n, img.parents[n])
			cnt, size, err := packDirents(s.dirEnts)
			if err != nil {
				return nil, err
			}
			s.dirCnt, dataLen = cnt, size
			n.Size = size
		case n.isLnk():
			dataLen = uint64(len(n.Target))
		}
		switch {
		case n.isReg():
			s.layout = layoutChunkBased
			s.recSize = align(head, 8) + 8*uint64(len(n.Chunks))
		case dataLen > 0:
			tail := dataLen % blockSize
			if tail != 0 && head+tail <= blockSize {
				s.layout, s.tail = layoutFlatInline, int(tail)
				s.recSize = head + tail
				// inline data must not cross a block boundary
				if cursor%blockSize+s.recSize > blockSize {
					cursor = align(cursor, blockSize)
				}
			} else {
				s.layout, s.recSize = layoutFlatPlain, head
			}
			if dataLen > uint64(s.tail) {
				plainBlocks = append(plainBlocks, n)
			}
		default:
			s.layout, s.recSize = layoutFlatPlain, head
		}
		n.nid = cursor / 32
		cursor += align(s.recSize, 32)
	}
	for i, n := range img.inodes {
		n.ino = uint64(i + 1)
	}
	// Pass 2: non-inline data blocks after the inode area.
	dataBlk := uint32(align(metaBase+cursor, blockSize) / blockSize)
	for _, n := range plainBlocks {
		s := slots[n]
		s.firstBlk = dataBlk
		body := uint64(len(n.Target))
		if n.isDir() {
			body = n.Size
		}
		dataBlk += uint32(align(body-uint64(s.tail), blockSize) / blockSize)
	}
	dataEnd := uint64(dataBlk) * blockSize

	// Chunk table: one entry per unique (digest, blob), sorted by digest.
	type ckey struct {
		d    [32]byte
		blob uint32
	}
	uniq := map[ckey]chunkRef{}
	for _, n := range img.inodes {
		for _, c := range n.Chunks {
			uniq[ckey{c.Digest, c.BlobIndex}] = c
		}
	}
	chunks := make([]chunkRef, 0, len(uniq))
	for _, c := range uniq {
		chunks = append(chunks, c)
	}
	sort.Slice(chunks, func(i, j int) bool {
		if c := bytes.Compare(chunks[i].Digest[:], chunks[j].Digest[:]); c != 0 {
			return c < 0
		}
		return chunks[i].BlobIndex < chunks[j].BlobIndex
	})
	var chunkTableOff, chunkTableSize uint64
	total := dataEnd
	if len(chunks) > 0 {
		chunkTableOff = dataEnd
		chunkTableSize = uint64(v6ChunkInfoSize * len(chunks))
		total = align(chunkTableOff+chunkTableSize, blockSize)
	}
	buf := make([]byte, total)
	le := binary.LittleEndian

	// Superblock.
	sb := buf[erofsSBOffset:]
	le.PutUint32(sb[0:], erofsMagic)
	le.PutUint32(sb[8:], rafsV6CompatBit)
	sb[12] = 12
	le.PutUint16(sb[14:], rootNid)
	le.PutUint64(sb[16:], uint64(len(img.inodes)))
	var dataBlocks uint64
	for _, b := range img.blobs {
		dataBlocks += b.UncompressedSize / blockSize
	}
	le.PutUint32(sb[36:], uint32(dataBlocks))
	le.PutUint32(sb[40:], uint32(metaBlk))
	le.PutUint32(sb[80:], erofsIncompatRAFS)
	le.PutUint16(sb[86:], uint16(nblobs))
	le.PutUint16(sb[88:], devtSlotOff)
	// Extended superblock.
	ext := buf[erofsSBOffset+128:]
	le.PutUint64(ext[0:], img.flags)
	le.PutUint64(ext[8:], blobTableOff)
	le.PutUint32(ext[16:], uint32(blobTableSize))
	le.PutUint32(ext[20:], img.chunkSize)
	le.PutUint64(ext[24:], chunkTableOff)
	le.PutUint64(ext[32:], chunkTableSize)
	if prefetchSize > 0 {
		le.PutUint64(ext[40:], prefetchOff)
		le.PutUint32(ext[48:], uint32(prefetchSize))
	}
	// Device table and blob table.
	mapped := align(total, mappedAlign) / blockSize
	for i, b := range img.blobs {
		slot := buf[devtSlotOff*devSlotSize+i*devSlotSize:]
		copy(slot[0:64], b.ID)
		blocks := b.UncompressedSize / blockSize
		le.PutUint32(slot[64:], uint32(blocks))
		le.PutUint32(slot[68:], uint32(mapped))
		mapped = align((mapped+blocks)*blockSize, mappedAlign) / blockSize
		encodeV6BlobEntry(buf[blobTableOff+uint64(i)*v6BlobEntrySize:][:v6BlobEntrySize], i, img.chunkSize, b)
	}
	for i, n := range img.prefetch {
		le.PutUint32(buf[prefetchOff+uint64(4*i):], uint32(n.nid))
	}
	// Inodes.
	for _, n := range img.inodes {
		s := slots[n]
		off := metaBase + n.nid*32
		in := buf[off:]
		le.PutUint16(in[0:], uint16(1|s.layout<<1))
		if len(s.xattrs) > 0 {
			le.PutUint16(in[2:], uint16((len(s.xattrs)-12)/4+1))
		}
		le.PutUint16(in[4:], uint16(n.Mode))
		le.PutUint64(in[8:], n.Size)
		switch {
		case n.isReg():
			le.PutUint32(in[16:], chunkFormatIndexes|uint32(bits.TrailingZeros32(img.chunkSize)-12))
		case n.Mode&modeTypeMask == modeChr || n.Mode&modeTypeMask == modeBlk:
			le.PutUint32(in[16:], uint32(n.Rdev))
		case s.firstBlk != 0:
			le.PutUint32(in[16:], s.firstBlk)
		case s.layout == layoutFlatInline:
			// nydus points i_u at the inode's own block when all data is inline
			le.PutUint32(in[16:], uint32(off/blockSize))
		}
		le.PutUint32(in[20:], uint32(n.ino))
		le.PutUint32(in[24:], n.UID)
		le.PutUint32(in[28:], n.GID)
		le.PutUint64(in[32:], uint64(n.Mtime))
		le.PutUint32(in[40:], n.MtimeNsec)
		le.PutUint32(in[44:], n.nlink)
		copy(in[inodeExtSize:], s.xattrs)
		head := uint64(inodeExtSize + len(s.xattrs))
		var body []byte
		switch {
		case n.isDir():
			body = encodeDirents(s.dirEnts, s.dirCnt)
		case n.isLnk():
			body = []byte(n.Target)
		case n.isReg():
			idx := in[align(head, 8):]
			for k, c := range n.Chunks {
				e := idx[8*k:]
				le.PutUint16(e[0:], uint16(c.CI))
				le.PutUint16(e[2:], uint16(c.BlobIndex+1)|uint16(c.CI>>16)<<8)
				le.PutUint32(e[4:], uint32(c.UOff/blockSize))
			}
		}
		if body != nil {
			full := len(body) - s.tail
			copy(in[head:], body[full:])
			if full > 0 {
				copy(buf[uint64(s.firstBlk)*blockSize:], body[:full])
			}
		}
	}
	// Chunk table.
	for i, c := range chunks {
		e := buf[chunkTableOff+uint64(i*v6ChunkInfoSize):]
		encodeChunkInfo(e, c, 0)
	}
	return buf, nil
}

// encodeChunkInfo writes an 80-byte RafsV5ChunkInfo (rafs-format.md §2.7).
func encodeChunkInfo(e []byte, c chunkRef, fileOff uint64) {
	le := binary.LittleEndian
	copy(e[0:32], c.Digest[:])
	le.PutUint32(e[32:], c.BlobIndex)
	if c.Compressed {
		le.PutUint32(e[36:], 1)
	}
	le.PutUint32(e[40:], c.CSize)
	le.PutUint32(e[44:], c.USize)
	le.PutUint64(e[48:], c.COff)
	le.PutUint64(e[56:], c.UOff)
	le.PutUint64(e[64:], fileOff)
	le.PutUint32(e[72:], c.CI)
}

func encodeV6BlobEntry(e []byte, index int, chunkSize uint32, b blobInfo) {
	le := binary.LittleEndian
	copy(e[0:64], b.ID)
	le.PutUint32(e[64:], uint32(index))
	le.PutUint32(e[68:], chunkSize)
	le.PutUint32(e[72:], b.ChunkCount)
	le.PutUint32(e[76:], b.Compressor)
	le.PutUint32(e[80:], b.Digester)
	le.PutUint32(e[84:], b.Features)
	le.PutUint64(e[88:], b.CompressedSize)
	le.PutUint64(e[96:], b.UncompressedSize)
	le.PutUint32(e[104:], b.TOCSize)
	le.PutUint32(e[108:], b.CICompressor)
	le.PutUint64(e[112:], b.CIOffset)
	le.PutUint64(e[120:], b.CICompressedSize)
	le.PutUint64(e[128:], b.CIUncompressed)
	copy(e[136:168], b.TOCDigest[:])
}
