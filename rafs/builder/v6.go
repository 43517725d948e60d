package builder

import (
	"bytes"
	"fmt"
	"math/bits"
	"sort"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/layout"
)

// Builder choices for v6 bootstraps.
const (
	rootNid     = layout.RAFSRootNid
	mappedAlign = 512 << 10 // device slots' mapped_blkaddr alignment
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
	b := make([]byte, layout.XattrIbodyHeaderSize)
	for _, x := range xs {
		idx, suffix, _ := layout.SplitXattrName(x.Name)
		h := layout.XattrEntry{NameLen: uint8(len(suffix)), NameIndex: idx, ValueSize: uint16(len(x.Value))}
		e := make([]byte, h.Size())
		h.Encode(e)
		copy(e[copy(e[layout.XattrEntrySize:], suffix)+layout.XattrEntrySize:], x.Value)
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
		need := layout.DirentSize + len(e.name)
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
		b := make([]byte, layout.DirentSize*cnt)
		nameOff := layout.DirentSize * cnt
		for i, e := range blk {
			d := layout.Dirent{Nid: e.ino.nid, NameOff: uint16(nameOff), FileType: layout.ModeFileType(e.ino.Mode)}
			d.Encode(b[i*layout.DirentSize:])
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
	layout   uint16
	dirCnt   []int
	dirEnts  []dirent
	tail     int    // bytes of data stored inline
	recSize  uint64 // inode + xattrs + inline tail or chunk indexes
	firstBlk uint32 // first non-inline data block
}

// v6Layout is where everything of a v6 bootstrap goes.
type v6Layout struct {
	blobTableOff, blobTableSize uint64
	prefetchOff, prefetchSize   uint64
	metaBlk, metaBase           uint64
	slots                       map[*inode]*v6Slot
	chunks                      []chunkRef // the chunk table
	chunkTableOff               uint64
	chunkTableSize              uint64
	total                       uint64
}

// writeV6 lays out and encodes a RAFS v6 bootstrap.
func writeV6(img *image) ([]byte, error) {
	l, err := layoutV6(img)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, l.total)
	encodeV6Supers(buf, img, l)
	layout.EncodePrefetch(buf[l.prefetchOff:], prefetchIDs(img.prefetch, func(n *inode) uint64 { return n.nid }))
	for _, n := range img.inodes {
		encodeV6Inode(buf, img, l, n)
	}
	for i, c := range l.chunks {
		encodeChunkInfo(buf[l.chunkTableOff+uint64(i*layout.ChunkInfoV5Size):], c, 0)
	}
	return buf, nil
}

// layoutV6 places the tables, the inodes (pass 1: sizes, layouts and
// nids), their non-inline data blocks (pass 2) and the chunk table.
func layoutV6(img *image) (*v6Layout, error) {
	nblobs := len(img.blobs)
	l := &v6Layout{slots: make(map[*inode]*v6Slot, len(img.inodes))}
	l.blobTableOff = align(uint64(layout.RAFSDevtSlotOff*layout.DeviceSlotSize+layout.DeviceSlotSize*nblobs), blockSize)
	l.blobTableSize = uint64(layout.BlobEntryV6Size * nblobs)
	l.prefetchOff = l.blobTableOff + l.blobTableSize
	l.prefetchSize = uint64(4 * len(img.prefetch))
	l.metaBlk = align(l.prefetchOff+l.prefetchSize, blockSize) / blockSize
	l.metaBase = l.metaBlk * blockSize

	cursor := uint64(rootNid * layout.InodeSlotSize)
	var plainBlocks []*inode
	for _, n := range img.inodes {
		s, dataLen, err := placeV6(img, n, &cursor)
		if err != nil {
			return nil, err
		}
		l.slots[n] = s
		if dataLen > uint64(s.tail) {
			plainBlocks = append(plainBlocks, n)
		}
	}
	for i, n := range img.inodes {
		n.ino = uint64(i + 1)
	}
	dataBlk := uint32(align(l.metaBase+cursor, blockSize) / blockSize)
	for _, n := range plainBlocks {
		s := l.slots[n]
		s.firstBlk = dataBlk
		body := uint64(len(n.Target))
		if n.isDir() {
			body = n.Size
		}
		dataBlk += uint32(align(body-uint64(s.tail), blockSize) / blockSize)
	}
	l.total = uint64(dataBlk) * blockSize
	l.chunks = chunkTable(img.inodes)
	if len(l.chunks) > 0 {
		l.chunkTableOff = l.total
		l.chunkTableSize = uint64(layout.ChunkInfoV5Size * len(l.chunks))
		l.total = align(l.chunkTableOff+l.chunkTableSize, blockSize)
	}
	return l, nil
}

// placeV6 chooses n's data layout and gives it the next nid at *cursor;
// it returns the slot and the length of n's directory or symlink body.
func placeV6(img *image, n *inode, cursor *uint64) (*v6Slot, uint64, error) {
	s := &v6Slot{xattrs: xattrBody(n.Xattrs)}
	head := uint64(layout.InodeExtendedSize + len(s.xattrs))
	var dataLen uint64
	switch {
	case n.isDir():
		s.dirEnts = dirEntries(n, img.parents[n])
		cnt, size, err := packDirents(s.dirEnts)
		if err != nil {
			return nil, 0, err
		}
		s.dirCnt, dataLen = cnt, size
		n.Size = size
	case n.isLnk():
		dataLen = uint64(len(n.Target))
	}
	switch {
	case n.isReg():
		s.layout = layout.LayoutChunkBased
		s.recSize = align(head, layout.ChunkIndexSize) + layout.ChunkIndexSize*uint64(len(n.Chunks))
	case dataLen > 0:
		tail := dataLen % blockSize
		if tail != 0 && head+tail <= blockSize {
			s.layout, s.tail = layout.LayoutFlatInline, int(tail)
			s.recSize = head + tail
			// inline data must not cross a block boundary
			if *cursor%blockSize+s.recSize > blockSize {
				*cursor = align(*cursor, blockSize)
			}
		} else {
			s.layout, s.recSize = layout.LayoutFlatPlain, head
		}
	default:
		s.layout, s.recSize = layout.LayoutFlatPlain, head
	}
	n.nid = *cursor / layout.InodeSlotSize
	*cursor += align(s.recSize, layout.InodeSlotSize)
	return s, dataLen, nil
}

// chunkTable lists one entry per unique (digest, blob), sorted by digest.
func chunkTable(inodes []*inode) []chunkRef {
	type ckey struct {
		d    [32]byte
		blob uint32
	}
	uniq := map[ckey]chunkRef{}
	for _, n := range inodes {
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
	return chunks
}

// encodeV6Supers writes the superblock, the extended superblock, the
// device table and the blob table.
func encodeV6Supers(buf []byte, img *image, l *v6Layout) {
	var dataBlocks uint64
	for _, b := range img.blobs {
		dataBlocks += v6BlobBlocks(b)
	}
	sb := layout.SuperBlock{Magic: layout.ErofsMagic, FeatureCompat: layout.CompatRAFSV6, BlkSzBits: 12,
		RootNid: rootNid, Inos: uint64(len(img.inodes)), Blocks: uint32(dataBlocks), MetaBlkAddr: uint32(l.metaBlk),
		FeatureIncompat: layout.IncompatRAFS, ExtraDevices: uint16(len(img.blobs)), DevtSlotOff: layout.RAFSDevtSlotOff}
	sb.Encode(buf[layout.SuperOffset:])
	ext := layout.ExtSuperBlock{Flags: img.flags, BlobTableOffset: l.blobTableOff, BlobTableSize: uint32(l.blobTableSize),
		ChunkSize: img.chunkSize, ChunkTableOffset: l.chunkTableOff, ChunkTableSize: l.chunkTableSize}
	if l.prefetchSize > 0 {
		ext.PrefetchTableOffset, ext.PrefetchTableSize = l.prefetchOff, uint32(l.prefetchSize)
	}
	ext.Encode(buf[layout.ExtSuperOffset:])
	mapped := align(l.total, mappedAlign) / blockSize
	for i, b := range img.blobs {
		blocks := v6BlobBlocks(b)
		slot := layout.DeviceSlot{Tag: b.ID, Blocks: uint32(blocks), MappedBlkAddr: uint32(mapped)}
		slot.Encode(buf[(layout.RAFSDevtSlotOff+i)*layout.DeviceSlotSize:])
		mapped = align((mapped+blocks)*blockSize, mappedAlign) / blockSize
		encodeV6BlobEntry(buf[l.blobTableOff+uint64(i)*layout.BlobEntryV6Size:], i, img.chunkSize, b)
	}
}

// v6BlobBlocks is the blocks a blob's device slot maps: its uncompressed
// size in 4 KiB blocks, rounded up (a built blob's size is a multiple of
// the block; a parent's odd size must not round down to a slot of 0
// blocks, which does not open).
func v6BlobBlocks(b blobInfo) uint64 {
	return (b.UncompressedSize + blockSize - 1) / blockSize
}

// encodeV6Inode writes n's extended inode, its xattrs, its inline tail or
// chunk indexes, and its data blocks.
func encodeV6Inode(buf []byte, img *image, l *v6Layout, n *inode) {
	s := l.slots[n]
	off := l.metaBase + n.nid*layout.InodeSlotSize
	di := layout.Inode{Format: 1 | s.layout<<1, XattrCount: layout.XattrCountFor(len(s.xattrs)), Mode: uint16(n.Mode),
		Size: n.Size, Ino: uint32(n.ino), UID: n.UID, GID: n.GID, Mtime: uint64(n.Mtime), MtimeNsec: n.MtimeNsec, Nlink: n.nlink}
	switch {
	case n.isReg():
		di.U = layout.ChunkFormatIndexes | uint32(bits.TrailingZeros32(img.chunkSize)-12)
	case n.Mode&modeTypeMask == modeChr || n.Mode&modeTypeMask == modeBlk:
		di.U = uint32(n.Rdev)
	case s.firstBlk != 0:
		di.U = s.firstBlk
	case s.layout == layout.LayoutFlatInline:
		// nydus points i_u at the inode's own block when all data is inline
		di.U = uint32(off / blockSize)
	}
	in := buf[off:]
	di.Encode(in)
	copy(in[layout.InodeExtendedSize:], s.xattrs)
	head := uint64(layout.InodeExtendedSize + len(s.xattrs))
	var body []byte
	switch {
	case n.isDir():
		body = encodeDirents(s.dirEnts, s.dirCnt)
	case n.isLnk():
		body = []byte(n.Target)
	case n.isReg():
		idx := in[align(head, layout.ChunkIndexSize):]
		for k, c := range n.Chunks {
			e := layout.RAFSChunkIndex(c.BlobIndex, c.CI, uint32(c.UOff/blockSize))
			e.Encode(idx[layout.ChunkIndexSize*k:])
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

// prefetchIDs maps the prefetch list to the table's inode numbers.
func prefetchIDs(ns []*inode, id func(*inode) uint64) []uint32 {
	ids := make([]uint32, len(ns))
	for i, n := range ns {
		ids[i] = uint32(id(n))
	}
	return ids
}

// encodeChunkInfo writes an 80-byte RafsV5ChunkInfo.
func encodeChunkInfo(e []byte, c chunkRef, fileOff uint64) {
	ci := layout.ChunkInfoV5{Digest: c.Digest, BlobIndex: c.BlobIndex, CompressedSize: c.CSize, UncompressedSize: c.USize,
		CompressedOffset: c.COff, UncompressedOffset: c.UOff, FileOffset: fileOff, Index: c.CI}
	if c.Compressed {
		ci.Flags = layout.ChunkCompressed
	}
	ci.Encode(e)
}

// encodeV6BlobEntry writes blob b's v6 blob table entry.
func encodeV6BlobEntry(e []byte, index int, chunkSize uint32, b blobInfo) {
	b.Index, b.ChunkSize = uint32(index), chunkSize
	b.Encode(e)
}
