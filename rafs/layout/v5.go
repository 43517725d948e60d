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

func (s *SuperBlockV5) fields(f *codec) {
	f.u32(0, &s.Magic)
	f.u32(4, &s.Version)
	f.u32(8, &s.SuperSize)
	f.u32(12, &s.ChunkSize)
	f.u64(16, &s.Flags)
	f.u64(24, &s.InodesCount)
	f.u64(32, &s.InodeTableOffset)
	f.u64(40, &s.PrefetchTableOffset)
	f.u64(48, &s.BlobTableOffset)
	f.u32(56, &s.InodeTableEntries)
	f.u32(60, &s.PrefetchTableEntries)
	f.u32(64, &s.BlobTableSize)
	f.u32(68, &s.ExtBlobTableEntries)
	f.u64(72, &s.ExtBlobTableOffset)
}

// Decode reads the structure from b[:SuperBlockV5Size]; Encode writes it there.
func (s *SuperBlockV5) Decode(b []byte) { s.fields(&codec{b: b[:SuperBlockV5Size]}) }
func (s *SuperBlockV5) Encode(b []byte) { s.fields(&codec{b: b[:SuperBlockV5Size], enc: true}) }

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

func (n *InodeV5) fields(f *codec) {
	f.sha(0, &n.Digest)
	f.u64(32, &n.Parent)
	f.u64(40, &n.Ino)
	f.u32(48, &n.UID)
	f.u32(52, &n.GID)
	f.u32(60, &n.Mode)
	f.u64(64, &n.Size)
	f.u64(72, &n.Blocks)
	f.u64(80, &n.Flags)
	f.u32(88, &n.Nlink)
	f.u32(92, &n.ChildIndex)
	f.u32(96, &n.ChildCount)
	f.u16(100, &n.NameSize)
	f.u16(102, &n.SymlinkSize)
	f.u32(104, &n.Rdev)
	f.u32(108, &n.MtimeNsec)
	f.u64(112, &n.Mtime)
}

// Decode reads the structure from b[:V5InodeSize]; Encode writes it there.
func (n *InodeV5) Decode(b []byte) { n.fields(&codec{b: b[:V5InodeSize]}) }
func (n *InodeV5) Encode(b []byte) { n.fields(&codec{b: b[:V5InodeSize], enc: true}) }

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

func (e *ExtBlobEntryV5) fields(f *codec) {
	f.u32(0, &e.ChunkCount)
	f.u32(4, &e.Features)
	f.u64(8, &e.UncompressedSize)
	f.u64(16, &e.CompressedSize)
}

// Decode reads the structure from b[:V5ExtBlobSize]; Encode writes it there.
func (e *ExtBlobEntryV5) Decode(b []byte) { e.fields(&codec{b: b[:V5ExtBlobSize]}) }
func (e *ExtBlobEntryV5) Encode(b []byte) { e.fields(&codec{b: b[:V5ExtBlobSize], enc: true}) }

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

func (c *ChunkInfoV5) fields(f *codec) {
	f.sha(0, &c.Digest)
	f.u32(32, &c.BlobIndex)
	f.u32(36, &c.Flags)
	f.u32(40, &c.CompressedSize)
	f.u32(44, &c.UncompressedSize)
	f.u64(48, &c.CompressedOffset)
	f.u64(56, &c.UncompressedOffset)
	f.u64(64, &c.FileOffset)
	f.u32(72, &c.Index)
	f.u32(76, &c.CRC32)
}

// Decode reads the structure from b[:ChunkInfoV5Size]; Encode writes it there.
func (c *ChunkInfoV5) Decode(b []byte) { c.fields(&codec{b: b[:ChunkInfoV5Size]}) }
func (c *ChunkInfoV5) Encode(b []byte) { c.fields(&codec{b: b[:ChunkInfoV5Size], enc: true}) }
