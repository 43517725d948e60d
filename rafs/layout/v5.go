package layout

import "bytes"

// RAFS v5.
const (
	V5Magic          = 0x52414653 // "SFAR"
	V5Version        = 0x500
	V5SuperSize      = 8192 // the superblock area; tables start after it
	V5InodeSize      = 128
	V5ExtBlobSize    = 64
	ChunkInfoV5Size  = 80
	V5MaxBootstrap   = 0x8000_0000
	V5InodeSymlink   = 0x1 // inode flags
	V5InodeHardlink  = 0x2
	V5InodeXattr     = 0x4
	V5InodeHasHole   = 0x8
	ChunkCompressed  = 0x1 // ChunkInfoV5 flags
	V5BlobReadahead  = 8   // bytes before each v5 blob table id
	V5InodeAlignment = 8   // inode records start at multiples of 8
)

// SuperBlockV5 is the RAFS v5 superblock at byte 0 (its area is 8192 bytes).
type SuperBlockV5 struct {
	Magic                uint32
	Version              uint32
	SuperSize            uint32
	ChunkSize            uint32
	Flags                uint64
	InodesCount          uint64
	InodeTableOffset     uint64
	PrefetchTableOffset  uint64
	BlobTableOffset      uint64
	InodeTableEntries    uint32
	PrefetchTableEntries uint32
	BlobTableSize        uint32
	ExtBlobTableEntries  uint32
	ExtBlobTableOffset   uint64
}

// SuperBlockV5Size is the part of the superblock SuperBlockV5 covers.
const SuperBlockV5Size = 80

// Decode reads the superblock from b[:SuperBlockV5Size].
func (s *SuperBlockV5) Decode(b []byte) {
	_ = b[SuperBlockV5Size-1]
	*s = SuperBlockV5{
		Magic: le.Uint32(b[0:]), Version: le.Uint32(b[4:]), SuperSize: le.Uint32(b[8:]), ChunkSize: le.Uint32(b[12:]),
		Flags: le.Uint64(b[16:]), InodesCount: le.Uint64(b[24:]), InodeTableOffset: le.Uint64(b[32:]),
		PrefetchTableOffset: le.Uint64(b[40:]), BlobTableOffset: le.Uint64(b[48:]),
		InodeTableEntries: le.Uint32(b[56:]), PrefetchTableEntries: le.Uint32(b[60:]),
		BlobTableSize: le.Uint32(b[64:]), ExtBlobTableEntries: le.Uint32(b[68:]), ExtBlobTableOffset: le.Uint64(b[72:]),
	}
}

// Encode writes the superblock to b[:SuperBlockV5Size].
func (s *SuperBlockV5) Encode(b []byte) {
	_ = b[SuperBlockV5Size-1]
	le.PutUint32(b[0:], s.Magic)
	le.PutUint32(b[4:], s.Version)
	le.PutUint32(b[8:], s.SuperSize)
	le.PutUint32(b[12:], s.ChunkSize)
	le.PutUint64(b[16:], s.Flags)
	le.PutUint64(b[24:], s.InodesCount)
	le.PutUint64(b[32:], s.InodeTableOffset)
	le.PutUint64(b[40:], s.PrefetchTableOffset)
	le.PutUint64(b[48:], s.BlobTableOffset)
	le.PutUint32(b[56:], s.InodeTableEntries)
	le.PutUint32(b[60:], s.PrefetchTableEntries)
	le.PutUint32(b[64:], s.BlobTableSize)
	le.PutUint32(b[68:], s.ExtBlobTableEntries)
	le.PutUint64(b[72:], s.ExtBlobTableOffset)
}

// InodeV5 is the 128-byte head of a v5 inode record; the record goes on
// with the name and the symlink target (each padded to 8), the xattrs
// (u64 size, then u32-length-prefixed "name\0value" pairs, padded to 8)
// and, for a regular file, ChildCount ChunkInfoV5 entries.
type InodeV5 struct {
	Digest      [32]byte
	Parent      uint64
	Ino         uint64
	UID, GID    uint32
	Mode        uint32
	Size        uint64
	Blocks      uint64
	Flags       uint64
	Nlink       uint32
	ChildIndex  uint32 // directories: first child's table index
	ChildCount  uint32 // directories: children; regular files: chunks
	NameSize    uint16
	SymlinkSize uint16
	Rdev        uint32
	MtimeNsec   uint32
	Mtime       uint64
}

// Decode reads the inode from b[:V5InodeSize].
func (n *InodeV5) Decode(b []byte) {
	_ = b[V5InodeSize-1]
	*n = InodeV5{
		Parent: le.Uint64(b[32:]), Ino: le.Uint64(b[40:]), UID: le.Uint32(b[48:]), GID: le.Uint32(b[52:]),
		Mode: le.Uint32(b[60:]), Size: le.Uint64(b[64:]), Blocks: le.Uint64(b[72:]), Flags: le.Uint64(b[80:]),
		Nlink: le.Uint32(b[88:]), ChildIndex: le.Uint32(b[92:]), ChildCount: le.Uint32(b[96:]),
		NameSize: le.Uint16(b[100:]), SymlinkSize: le.Uint16(b[102:]), Rdev: le.Uint32(b[104:]),
		MtimeNsec: le.Uint32(b[108:]), Mtime: le.Uint64(b[112:]),
	}
	copy(n.Digest[:], b[:32])
}

// Encode writes the inode to b[:V5InodeSize].
func (n *InodeV5) Encode(b []byte) {
	_ = b[V5InodeSize-1]
	copy(b[:32], n.Digest[:])
	le.PutUint64(b[32:], n.Parent)
	le.PutUint64(b[40:], n.Ino)
	le.PutUint32(b[48:], n.UID)
	le.PutUint32(b[52:], n.GID)
	le.PutUint32(b[60:], n.Mode)
	le.PutUint64(b[64:], n.Size)
	le.PutUint64(b[72:], n.Blocks)
	le.PutUint64(b[80:], n.Flags)
	le.PutUint32(b[88:], n.Nlink)
	le.PutUint32(b[92:], n.ChildIndex)
	le.PutUint32(b[96:], n.ChildCount)
	le.PutUint16(b[100:], n.NameSize)
	le.PutUint16(b[102:], n.SymlinkSize)
	le.PutUint32(b[104:], n.Rdev)
	le.PutUint32(b[108:], n.MtimeNsec)
	le.PutUint64(b[112:], n.Mtime)
}

// XattrsOffset is where the record's xattr block starts, relative to the
// inode.
func (n *InodeV5) XattrsOffset() uint64 {
	return V5InodeSize + AlignUp(uint64(n.NameSize), 8) + AlignUp(uint64(n.SymlinkSize), 8)
}

// ExtBlobEntryV5 is one 64-byte entry of the v5 extended blob table.
type ExtBlobEntryV5 struct {
	ChunkCount       uint32
	Features         uint32
	UncompressedSize uint64
	CompressedSize   uint64
}

// Decode reads the entry from b[:V5ExtBlobSize].
func (e *ExtBlobEntryV5) Decode(b []byte) {
	_ = b[V5ExtBlobSize-1]
	*e = ExtBlobEntryV5{ChunkCount: le.Uint32(b[0:]), Features: le.Uint32(b[4:]),
		UncompressedSize: le.Uint64(b[8:]), CompressedSize: le.Uint64(b[16:])}
}

// Encode writes the entry to b[:V5ExtBlobSize].
func (e *ExtBlobEntryV5) Encode(b []byte) {
	_ = b[V5ExtBlobSize-1]
	le.PutUint32(b[0:], e.ChunkCount)
	le.PutUint32(b[4:], e.Features)
	le.PutUint64(b[8:], e.UncompressedSize)
	le.PutUint64(b[16:], e.CompressedSize)
}

// DecodeBlobTableV5 splits a v5 blob table (for each blob: 8 readahead
// bytes, the id, a NUL between ids) into its ids, stopping at an empty id
// or after max ids.
func DecodeBlobTableV5(bt []byte, max int) [][]byte {
	var ids [][]byte
	for len(bt) > V5BlobReadahead && len(ids) < max {
		id := bt[V5BlobReadahead:]
		if z := bytes.IndexByte(id, 0); z >= 0 {
			id, bt = id[:z], id[z+1:]
		} else {
			bt = nil
		}
		if len(id) == 0 {
			break
		}
		ids = append(ids, id)
	}
	return ids
}

// AppendBlobTableV5 appends the v5 blob table of ids to b (unpadded).
func AppendBlobTableV5(b []byte, ids []string) []byte {
	for i, id := range ids {
		b = append(b, make([]byte, V5BlobReadahead)...)
		b = append(b, id...)
		if i != len(ids)-1 {
			b = append(b, 0)
		}
	}
	return b
}

// ChunkInfoV5 is the 80-byte RafsV5ChunkInfo: a v5 inode's chunk record
// and an entry of the v6 bootstrap chunk table.
type ChunkInfoV5 struct {
	Digest             [32]byte
	BlobIndex          uint32
	Flags              uint32 // ChunkCompressed, ...
	CompressedSize     uint32
	UncompressedSize   uint32
	CompressedOffset   uint64
	UncompressedOffset uint64
	FileOffset         uint64
	Index              uint32
	CRC32              uint32
}

// Decode reads the entry from b[:ChunkInfoV5Size].
func (c *ChunkInfoV5) Decode(b []byte) {
	_ = b[ChunkInfoV5Size-1]
	*c = ChunkInfoV5{
		BlobIndex: le.Uint32(b[32:]), Flags: le.Uint32(b[36:]),
		CompressedSize: le.Uint32(b[40:]), UncompressedSize: le.Uint32(b[44:]),
		CompressedOffset: le.Uint64(b[48:]), UncompressedOffset: le.Uint64(b[56:]),
		FileOffset: le.Uint64(b[64:]), Index: le.Uint32(b[72:]), CRC32: le.Uint32(b[76:]),
	}
	copy(c.Digest[:], b[:32])
}

// Encode writes the entry to b[:ChunkInfoV5Size].
func (c *ChunkInfoV5) Encode(b []byte) {
	_ = b[ChunkInfoV5Size-1]
	copy(b[:32], c.Digest[:])
	le.PutUint32(b[32:], c.BlobIndex)
	le.PutUint32(b[36:], c.Flags)
	le.PutUint32(b[40:], c.CompressedSize)
	le.PutUint32(b[44:], c.UncompressedSize)
	le.PutUint64(b[48:], c.CompressedOffset)
	le.PutUint64(b[56:], c.UncompressedOffset)
	le.PutUint64(b[64:], c.FileOffset)
	le.PutUint32(b[72:], c.Index)
	le.PutUint32(b[76:], c.CRC32)
}
