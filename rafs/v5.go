package rafs

import (
	"bytes"
	"fmt"
	"sort"
	"syscall"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/layout"
)

func isV5(d []byte) bool {
	return len(d) >= 8 && le.Uint32(d) == layout.V5Magic && le.Uint32(d[4:]) == layout.V5Version
}

// v5Inode holds the v5 fields the generic Inode does not.
type v5Inode struct {
	off         uint64
	flags       uint64
	parent      uint64
	childIndex  uint32
	childCount  uint32
	nameSize    uint16
	symlinkSize uint16
	digest      [32]byte
}

// v5 is an open RAFS v5 bootstrap.
type v5 struct {
	d         []byte
	flags     uint64
	chunkSize uint64
	inodes    []byte // inode table, 4 bytes per entry
	entries   uint32
	count     uint64 // s_inodes_count
	prefetch  []uint32
	blobs     []*blob
	comp      Compression
	dalgo     DigestAlgo
}

func openV5(d []byte) (*v5, error) {
	size := uint64(len(d))
	if size < layout.V5SuperSize || size > layout.V5MaxBootstrap || size%8 != 0 {
		return nil, formatErr("v5: bootstrap size %d (must be >= 8192, <= 2 GiB, a multiple of 8)", size)
	}
	var sb layout.SuperBlockV5
	sb.Decode(d)
	if sb.SuperSize != layout.V5SuperSize {
		return nil, formatErr("v5: s_sb_size %d, want 8192", sb.SuperSize)
	}
	m := &v5{d: d, chunkSize: uint64(sb.ChunkSize), flags: sb.Flags, count: sb.InodesCount, entries: sb.InodeTableEntries}
	if !isPow2(m.chunkSize) || m.chunkSize < 4096 || m.chunkSize > maxChunkSize {
		return nil, formatErr("v5: chunk size %#x", m.chunkSize)
	}
	if err := checkSuperFlags(m.flags, false); err != nil {
		return nil, err
	}
	m.comp, m.dalgo = layout.FlagCompression(m.flags), layout.FlagDigest(m.flags)
	if m.entries == 0 || m.count > uint64(m.entries) {
		return nil, formatErr("v5: %d inodes in a table of %d entries", m.count, m.entries)
	}
	if err := checkV5Tables(&sb, size); err != nil {
		return nil, err
	}
	m.inodes = d[sb.InodeTableOffset : sb.InodeTableOffset+uint64(m.entries)*4]
	// An empty table's offset is not checked (checkV5Tables skips empty
	// ranges), so it must not be sliced: it may point anywhere.
	if sb.PrefetchTableEntries > 0 {
		m.prefetch = layout.DecodePrefetch(d[sb.PrefetchTableOffset : sb.PrefetchTableOffset+uint64(sb.PrefetchTableEntries)*4])
	}
	if err := m.parseBlobs(&sb); err != nil {
		return nil, err
	}
	root, err := m.inode(1)
	if err != nil {
		return nil, formatErr("v5: root inode: %v", err)
	}
	if !root.IsDir() {
		return nil, formatErr("v5: root inode is not a directory")
	}
	return m, nil
}

// checkV5Tables checks that the tables the superblock names lie inside
// the bootstrap, after the superblock, and do not overlap.
func checkV5Tables(sb *layout.SuperBlockV5, size uint64) error {
	type rng struct {
		name     string
		off, len uint64
	}
	ranges := []rng{{"inode table", sb.InodeTableOffset, uint64(sb.InodeTableEntries) * 4},
		{"prefetch table", sb.PrefetchTableOffset, uint64(sb.PrefetchTableEntries) * 4},
		{"blob table", sb.BlobTableOffset, uint64(sb.BlobTableSize)}}
	if sb.ExtBlobTableOffset != 0 {
		ranges = append(ranges, rng{"extended blob table", sb.ExtBlobTableOffset, uint64(sb.ExtBlobTableEntries) * layout.V5ExtBlobSize})
	}
	for i, r := range ranges {
		if r.len == 0 {
			continue
		}
		if r.off < layout.V5SuperSize || r.off > size || r.len > size-r.off {
			return formatErr("v5: %s [%d, +%d) is outside [8192, %d)", r.name, r.off, r.len, size)
		}
		for _, o := range ranges[:i] {
			if o.len != 0 && r.off < o.off+o.len && o.off < r.off+r.len {
				return formatErr("v5: %s overlaps the %s", r.name, o.name)
			}
		}
	}
	return nil
}

// parseBlobs decodes the blob table and the extended blob table.
func (m *v5) parseBlobs(sb *layout.SuperBlockV5) error {
	var ids [][]byte
	if sb.BlobTableSize > 0 { // an empty table's offset is unchecked
		ids = layout.DecodeBlobTableV5(m.d[sb.BlobTableOffset:sb.BlobTableOffset+uint64(sb.BlobTableSize)], maxBlobs+1)
	}
	if len(ids) > maxBlobs {
		return formatErr("v5: more than %d blobs", maxBlobs)
	}
	for _, id := range ids {
		if bytes.IndexByte(id, '/') >= 0 {
			return formatErr("v5: bad blob id %q", id)
		}
		m.blobs = append(m.blobs, &blob{index: len(m.blobs), id: string(id), compression: m.comp, digestAlgo: m.dalgo,
			chunkSize: uint32(m.chunkSize), features: layout.BlobV5NoExtTable})
	}
	if sb.ExtBlobTableOffset == 0 {
		return nil
	}
	if uint64(sb.ExtBlobTableEntries) < uint64(len(m.blobs)) {
		return formatErr("v5: %d extended blob entries for %d blobs", sb.ExtBlobTableEntries, len(m.blobs))
	}
	var e layout.ExtBlobEntryV5
	for i, b := range m.blobs {
		e.Decode(m.d[sb.ExtBlobTableOffset+uint64(i)*layout.V5ExtBlobSize:])
		b.chunkCount, b.uncompSize, b.compressedSize = e.ChunkCount, e.UncompressedSize, e.CompressedSize
		b.features = e.Features & (layout.BlobFeatureLowOK | 0x7000_0000)
		if b.chunkCount > maxChunkCount {
			return formatErr("v5: blob %d: %d chunks", i, b.chunkCount)
		}
	}
	return nil
}

func (m *v5) version() int       { return 5 }
func (m *v5) rootID() uint64     { return 1 }
func (m *v5) superFlags() uint64 { return m.flags }
func (m *v5) blobTable() []*blob { return m.blobs }

// inode decodes the inode with table index idx (1-based).
func (m *v5) inode(idx uint64) (*Inode, error) {
	if idx == 0 || idx > uint64(m.entries) {
		return nil, formatErr("v5: inode index %d of %d", idx, m.entries)
	}
	v := uint64(le.Uint32(m.inodes[(idx-1)*4:]))
	if v <= layout.V5SuperSize>>3 || v >= 1<<29 {
		return nil, formatErr("v5: inode %d: table value %#x", idx, v)
	}
	off := v << 3
	b, err := span(m.d, off, layout.V5InodeSize, "v5 inode")
	if err != nil {
		return nil, err
	}
	var di layout.InodeV5
	di.Decode(b)
	n := &Inode{id: idx, rawIno: di.Ino, UID: di.UID, GID: di.GID, Mode: di.Mode, Size: di.Size, Blocks: di.Blocks,
		Nlink: di.Nlink, Rdev: di.Rdev, MtimeNsec: di.MtimeNsec, Mtime: di.Mtime}
	n.v5 = v5Inode{off: off, flags: di.Flags, parent: di.Parent, childIndex: di.ChildIndex, childCount: di.ChildCount,
		nameSize: di.NameSize, symlinkSize: di.SymlinkSize, digest: di.Digest}
	if n.v5.nameSize == 0 || n.v5.nameSize > maxNameLen && idx != 1 {
		return nil, formatErr("v5: inode %d: name of %d bytes", idx, n.v5.nameSize)
	}
	if _, err := span(m.d, off, m.recordEnd(n)-off, "v5 inode record"); err != nil {
		return nil, err
	}
	switch n.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		if n.v5.childCount > 0 && (n.v5.childIndex == 0 || uint64(n.v5.childIndex)+uint64(n.v5.childCount)-1 > uint64(m.entries)) {
			return nil, formatErr("v5: inode %d: children [%d, +%d) outside the %d-entry table", idx, n.v5.childIndex, n.v5.childCount, m.entries)
		}
	case syscall.S_IFREG:
		if n.Size > 1<<50 {
			return nil, formatErr("v5: inode %d: size %d", idx, n.Size)
		}
	case syscall.S_IFLNK:
		if n.v5.flags&layout.V5InodeSymlink == 0 || n.v5.symlinkSize == 0 {
			return nil, formatErr("v5: inode %d: symlink without a target", idx)
		}
		n.Size = uint64(n.v5.symlinkSize)
	case syscall.S_IFCHR, syscall.S_IFBLK, syscall.S_IFIFO, syscall.S_IFSOCK:
	default:
		return nil, formatErr("v5: inode %d: bad mode %#o", idx, n.Mode)
	}
	return n, nil
}

// recordEnd is where the inode's record (with name, target, xattrs and
// chunks) ends; inode() checks that it lies inside the bootstrap.
func (m *v5) recordEnd(n *Inode) uint64 {
	p := n.v5.off + layout.V5InodeSize + alignUp(uint64(n.v5.nameSize), 8) + alignUp(uint64(n.v5.symlinkSize), 8)
	if n.v5.flags&layout.V5InodeXattr != 0 {
		if p+8 <= uint64(len(m.d)) {
			p += 8 + alignUp(min(le.Uint64(m.d[p:]), 1<<32), 8)
		} else {
			p += 8
		}
	}
	if n.IsRegular() {
		p += uint64(n.v5.childCount) * chunkInfoV5Size
	}
	return p
}

func (m *v5) name(n *Inode) []byte {
	p := n.v5.off + layout.V5InodeSize
	return m.d[p : p+uint64(n.v5.nameSize)]
}

func (m *v5) chunkArea(n *Inode) (uint64, error) {
	if !n.IsRegular() {
		return 0, nil
	}
	return m.recordEnd(n) - uint64(n.v5.childCount)*chunkInfoV5Size, nil
}

func (m *v5) readlink(n *Inode) ([]byte, error) {
	p := n.v5.off + layout.V5InodeSize + alignUp(uint64(n.v5.nameSize), 8)
	return span(m.d, p, uint64(n.v5.symlinkSize), "v5 symlink")
}

func (m *v5) xattrs(n *Inode) ([]Xattr, error) {
	if n.v5.flags&layout.V5InodeXattr == 0 {
		return nil, nil
	}
	p := n.v5.off + layout.V5InodeSize + alignUp(uint64(n.v5.nameSize), 8) + alignUp(uint64(n.v5.symlinkSize), 8)
	hdr, err := span(m.d, p, 8, "v5 xattr size")
	if err != nil {
		return nil, err
	}
	body, err := span(m.d, p+8, le.Uint64(hdr), "v5 xattrs")
	if err != nil {
		return nil, err
	}
	var out []Xattr
	for len(body) > 0 {
		if len(body) < 4 {
			return nil, formatErr("v5: inode %d: truncated xattr pair", n.id)
		}
		l := uint64(le.Uint32(body))
		pair, err := span(body, 4, l, "v5 xattr pair")
		if err != nil {
			return nil, err
		}
		z := bytes.IndexByte(pair, 0)
		if z <= 0 {
			return nil, formatErr("v5: inode %d: xattr pair without a name", n.id)
		}
		out = append(out, Xattr{Name: string(pair[:z]), Value: append([]byte(nil), pair[z+1:]...)})
		body = body[4+l:]
	}
	return out, nil
}

func (m *v5) ino(n *Inode) uint64 {
	if (n.v5.flags&layout.V5InodeHardlink != 0 || n.Nlink > 1) && !n.IsDir() && n.rawIno >= 1 && n.rawIno <= uint64(m.entries) {
		return n.rawIno
	}
	return n.id
}

func (m *v5) idOf(ino uint64) (uint64, error) {
	if ino == 0 || ino > uint64(m.entries) {
		return 0, syscall.ENOENT
	}
	return ino, nil
}

func (m *v5) children(n *Inode) (first, count uint64) {
	return uint64(n.v5.childIndex), uint64(n.v5.childCount)
}

func (m *v5) lookup(n *Inode, name string) (uint64, error) {
	first, count := m.children(n)
	key := []byte(name)
	var ferr error
	i := sort.Search(int(count), func(i int) bool {
		c, err := m.inode(first + uint64(i))
		if err != nil {
			ferr = err
			return true
		}
		return bytes.Compare(m.name(c), key) >= 0
	})
	if ferr != nil {
		return 0, ferr
	}
	if uint64(i) < count {
		c, err := m.inode(first + uint64(i))
		if err != nil {
			return 0, err
		}
		if bytes.Equal(m.name(c), key) {
			return c.id, nil
		}
	}
	return 0, syscall.ENOENT
}

// readdir cookies: 1 after ".", 2 after "..", 3+i after child i.
func (m *v5) readdir(n *Inode, off uint64, fn func(name string, id uint64, dtype uint32, next uint64) bool) error {
	if off < 1 && !fn(".", n.id, syscall.S_IFDIR, 1) {
		return nil
	}
	if off < 2 {
		parent := n.v5.parent
		if parent == 0 || parent > uint64(m.entries) {
			parent = 1
		}
		if !fn("..", parent, syscall.S_IFDIR, 2) {
			return nil
		}
	}
	first, count := m.children(n)
	start := uint64(0)
	if off > 2 {
		start = off - 2
	}
	for i := start; i < count; i++ {
		c, err := m.inode(first + i)
		if err != nil {
			return err
		}
		if !fn(string(m.name(c)), c.id, c.Mode&syscall.S_IFMT, i+3) {
			return nil
		}
	}
	return nil
}

func (m *v5) flatData(n *Inode) ([]byte, bool, error) { return nil, false, nil }

// decodeV5Chunk decodes an 80-byte RafsV5ChunkInfo.
func decodeV5Chunk(b []byte) ChunkInfo {
	var e layout.ChunkInfoV5
	e.Decode(b)
	return v5ChunkInfo(&e)
}

func v5ChunkInfo(e *layout.ChunkInfoV5) ChunkInfo {
	return ChunkInfo{
		Flags:              e.Flags,
		CompressedSize:     e.CompressedSize,
		UncompressedSize:   e.UncompressedSize,
		CompressedOffset:   e.CompressedOffset,
		UncompressedOffset: e.UncompressedOffset,
		Index:              e.Index,
		CRC32:              e.CRC32,
		Digest:             e.Digest,
		HasDigest:          true,
		Compressed:         e.Flags&layout.ChunkCompressed != 0,
	}
}

func (m *v5) chunks(n *Inode, off, end uint64, fn func(c chunkRef) error) error {
	base, err := m.chunkArea(n)
	if err != nil {
		return err
	}
	count := uint64(n.v5.childCount)
	start := uint64(0)
	if n.v5.flags&layout.V5InodeHasHole == 0 {
		start = min(off/m.chunkSize, count)
	}
	for k := start; k < count; k++ {
		var e layout.ChunkInfoV5
		e.Decode(m.d[base+k*chunkInfoV5Size:])
		fileOff := e.FileOffset
		ci := v5ChunkInfo(&e)
		if fileOff >= end && n.v5.flags&layout.V5InodeHasHole == 0 {
			break
		}
		if fileOff >= end || fileOff+uint64(ci.UncompressedSize) <= off {
			continue
		}
		c := chunkRef{fileOff: fileOff, blob: e.BlobIndex, ci: ci, length: ci.UncompressedSize}
		if int(c.blob) >= len(m.blobs) {
			return formatErr("v5: inode %d chunk %d: blob index %d of %d", n.id, k, c.blob, len(m.blobs))
		}
		if ci.UncompressedSize == 0 || ci.UncompressedSize > maxChunkSize || ci.CompressedSize > maxChunkSize*2 {
			return formatErr("v5: inode %d chunk %d: sizes %d/%d", n.id, k, ci.CompressedSize, ci.UncompressedSize)
		}
		if err := fn(c); err != nil {
			return fmt.Errorf("v5: inode %d: %w", n.id, err)
		}
	}
	return nil
}
