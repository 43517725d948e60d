package layout

import (
	"strings"
	"syscall"
)

// EROFS superblock and the RAFS v6 additions.
const (
	ErofsMagic        = 0xE0F5E1E2
	SuperOffset       = 1024 // the EROFS superblock's byte offset
	SuperSize         = 128
	ExtSuperOffset    = SuperOffset + SuperSize // the RAFS v6 extended superblock
	ExtSuperSize      = 256
	CompatSBChecksum  = 0x1         // feature_compat: superblock CRC32C
	CompatRAFSV6      = 0x4000_0000 // feature_compat: a RAFS v6 image
	IncompatChunked   = 0x4         // feature_incompat: chunk-based files
	IncompatDevTable  = 0x8         // feature_incompat: device table
	IncompatRAFS      = IncompatChunked | IncompatDevTable
	RAFSDevtSlotOff   = 11 // RAFS puts the device table at slot 11 (byte 1408)
	DeviceSlotSize    = 128
	BlobEntryV6Size   = 256
	InodeCompactSize  = 32
	InodeExtendedSize = 64
	InodeSlotSize     = 32 // nid × 32 is an inode's offset in the meta area
	DirentSize        = 12
	ChunkIndexSize    = 8 // a RAFS (and EROFS INDEXES) chunk index entry
	NullAddr          = 0xffff_ffff
	RAFSRootNid       = 128 // where nydus places the root inode
	MaxNameLen        = 255
)

// Inode data layouts (i_format bits 1-3).
const (
	LayoutFlatPlain  = 0
	LayoutFlatInline = 2
	LayoutChunkBased = 4
)

// Chunk format bits of a chunk-based inode's i_u.
const (
	ChunkFormatIndexes = 0x20 // 8-byte chunk indexes (RAFS always sets it)
	ChunkFormatBlkbits = 0x1f // log2(chunk size) - block bits
)

// SuperBlock is the 128-byte EROFS superblock at byte 1024.
type SuperBlock struct {
	Magic           uint32
	Checksum        uint32
	FeatureCompat   uint32
	BlkSzBits       uint8
	ExtSlots        uint8
	RootNid         uint16
	Inos            uint64
	BuildTime       uint64
	BuildTimeNsec   uint32
	Blocks          uint32
	MetaBlkAddr     uint32
	XattrBlkAddr    uint32
	FeatureIncompat uint32
	U1              uint16 // available compression algorithms / lz4 max distance
	ExtraDevices    uint16
	DevtSlotOff     uint16
}

func (s *SuperBlock) fields(f *codec) {
	f.u32(0, &s.Magic)
	f.u32(4, &s.Checksum)
	f.u32(8, &s.FeatureCompat)
	f.u8(12, &s.BlkSzBits)
	f.u8(13, &s.ExtSlots)
	f.u16(14, &s.RootNid)
	f.u64(16, &s.Inos)
	f.u64(24, &s.BuildTime)
	f.u32(32, &s.BuildTimeNsec)
	f.u32(36, &s.Blocks)
	f.u32(40, &s.MetaBlkAddr)
	f.u32(44, &s.XattrBlkAddr)
	f.u32(80, &s.FeatureIncompat)
	f.u16(84, &s.U1)
	f.u16(86, &s.ExtraDevices)
	f.u16(88, &s.DevtSlotOff)
}

// Decode reads the structure from b[:SuperSize]; Encode writes it there.
func (s *SuperBlock) Decode(b []byte) { s.fields(&codec{b: b[:SuperSize]}) }
func (s *SuperBlock) Encode(b []byte) { s.fields(&codec{b: b[:SuperSize], enc: true}) }

// ExtSuperBlock is the 256-byte RAFS v6 extended superblock at byte 1152.
type ExtSuperBlock struct {
	Flags               uint64
	BlobTableOffset     uint64
	BlobTableSize       uint32
	ChunkSize           uint32
	ChunkTableOffset    uint64
	ChunkTableSize      uint64
	PrefetchTableOffset uint64
	PrefetchTableSize   uint32
}

func (s *ExtSuperBlock) fields(f *codec) {
	f.u64(0, &s.Flags)
	f.u64(8, &s.BlobTableOffset)
	f.u32(16, &s.BlobTableSize)
	f.u32(20, &s.ChunkSize)
	f.u64(24, &s.ChunkTableOffset)
	f.u64(32, &s.ChunkTableSize)
	f.u64(40, &s.PrefetchTableOffset)
	f.u32(48, &s.PrefetchTableSize)
}

// Decode reads the structure from b[:ExtSuperSize]; Encode writes it there.
func (s *ExtSuperBlock) Decode(b []byte) { s.fields(&codec{b: b[:ExtSuperSize]}) }
func (s *ExtSuperBlock) Encode(b []byte) { s.fields(&codec{b: b[:ExtSuperSize], enc: true}) }

// DeviceSlot is one 128-byte entry of the EROFS device table; RAFS has one
// per blob, tagged with the blob id.
type DeviceSlot struct {
	Tag           string // at most 64 bytes
	Blocks        uint32
	MappedBlkAddr uint32
}

func (d *DeviceSlot) fields(f *codec) {
	f.str(0, 64, &d.Tag)
	f.u32(64, &d.Blocks)
	f.u32(68, &d.MappedBlkAddr)
}

// Decode reads the structure from b[:DeviceSlotSize]; Encode writes it there.
func (d *DeviceSlot) Decode(b []byte) { d.fields(&codec{b: b[:DeviceSlotSize]}) }
func (d *DeviceSlot) Encode(b []byte) { d.fields(&codec{b: b[:DeviceSlotSize], enc: true}) }

// BlobEntry is one 256-byte entry of the RAFS v6 blob table
// (RafsV6BlobTable). Index and ChunkSize repeat the entry's position and
// the superblock's chunk size.
type BlobEntry struct {
	ID               string // at most 64 bytes
	Index            uint32
	ChunkSize        uint32
	ChunkCount       uint32
	Compressor       Compression
	Digester         DigestAlgo
	Features         uint32
	CompressedSize   uint64
	UncompressedSize uint64
	TOCSize          uint32
	CICompressor     Compression
	CIOffset         uint64
	CICompressedSize uint64
	CIUncompressed   uint64
	TOCDigest        [32]byte
	Cipher           uint32
}

func (e *BlobEntry) fields(f *codec) {
	f.str(0, 64, &e.ID)
	f.u32(64, &e.Index)
	f.u32(68, &e.ChunkSize)
	f.u32(72, &e.ChunkCount)
	f.comp(76, &e.Compressor)
	f.dig(80, &e.Digester)
	f.u32(84, &e.Features)
	f.u64(88, &e.CompressedSize)
	f.u64(96, &e.UncompressedSize)
	f.u32(104, &e.TOCSize)
	f.comp(108, &e.CICompressor)
	f.u64(112, &e.CIOffset)
	f.u64(120, &e.CICompressedSize)
	f.u64(128, &e.CIUncompressed)
	f.sha(136, &e.TOCDigest)
	f.u32(216, &e.Cipher)
}

// Decode reads the structure from b[:BlobEntryV6Size]; Encode writes it there.
func (e *BlobEntry) Decode(b []byte) { e.fields(&codec{b: b[:BlobEntryV6Size]}) }
func (e *BlobEntry) Encode(b []byte) { e.fields(&codec{b: b[:BlobEntryV6Size], enc: true}) }

// Inode is an EROFS inode, compact (32 bytes) or extended (64 bytes) as
// bit 0 of Format says. A compact inode has 16-bit mode, nlink, uid and
// gid, a 32-bit size, and its Mtime is a u32 relative to the superblock's
// build time (MtimeNsec unused).
type Inode struct {
	Format     uint16 // bit 0: extended; bits 1-3: data layout
	XattrCount uint16 // i_xattr_icount
	Mode       uint16
	Nlink      uint32
	Size       uint64
	Mtime      uint64
	MtimeNsec  uint32
	U          uint32 // raw block address, rdev or chunk format
	Ino        uint32
	UID, GID   uint32
}

// Extended reports whether the inode is the 64-byte form.
func (n *Inode) Extended() bool { return n.Format&1 != 0 }

// Size is the inode's on-disk size: 32 or 64.
func (n *Inode) ISize() uint64 {
	if n.Extended() {
		return InodeExtendedSize
	}
	return InodeCompactSize
}

// Layout is the inode's data layout (LayoutFlatPlain, ...).
func (n *Inode) Layout() uint8 { return uint8(n.Format>>1) & 7 }

// XattrSize is the size of the inline xattr area after the inode.
func (n *Inode) XattrSize() uint64 {
	if n.XattrCount == 0 {
		return 0
	}
	return XattrIbodyHeaderSize + 4*(uint64(n.XattrCount)-1)
}

// XattrCountFor is the i_xattr_icount of an inline xattr area of size
// bytes (header included).
func XattrCountFor(size int) uint16 {
	if size == 0 {
		return 0
	}
	return uint16((size-XattrIbodyHeaderSize)/4 + 1)
}

func (n *Inode) fields(f *codec) {
	f.u16(0, &n.Format)
	f.u16(2, &n.XattrCount)
	f.u16(4, &n.Mode)
	f.u32(16, &n.U)
	f.u32(20, &n.Ino)
	if !n.Extended() {
		f.u16as32(6, &n.Nlink)
		f.u32as64(8, &n.Size)
		f.u32as64(12, &n.Mtime)
		f.u16as32(24, &n.UID)
		f.u16as32(26, &n.GID)
		return
	}
	f.u64(8, &n.Size)
	f.u32(24, &n.UID)
	f.u32(28, &n.GID)
	f.u64(32, &n.Mtime)
	f.u32(40, &n.MtimeNsec)
	f.u32(44, &n.Nlink)
}

// Decode reads the inode from b, which holds at least the form bit 0 of
// b[0] names (32 or 64 bytes: callers check b[0] first).
func (n *Inode) Decode(b []byte) {
	*n = Inode{}
	n.fields(&codec{b: b[:InodeCompactSize<<(b[0]&1)]})
}

// Encode writes the inode in the form Format names to b[:ISize()];
// compact fields are truncated to their width.
func (n *Inode) Encode(b []byte) { n.fields(&codec{b: b[:n.ISize()], enc: true}) }

// ChunkIndex is one 8-byte entry of a chunk-based inode's index array.
// RAFS packs its chunk's blob and ci index into Advise and DeviceID (see
// RAFSChunk); plain EROFS uses DeviceID as the device (0: the image).
type ChunkIndex struct {
	Advise   uint16
	DeviceID uint16
	BlkAddr  uint32
}

func (c *ChunkIndex) fields(f *codec) {
	f.u16(0, &c.Advise)
	f.u16(2, &c.DeviceID)
	f.u32(4, &c.BlkAddr)
}

// Decode reads the entry from b[:ChunkIndexSize]; Encode writes it there.
func (c *ChunkIndex) Decode(b []byte) { c.fields(&codec{b: b[:ChunkIndexSize]}) }
func (c *ChunkIndex) Encode(b []byte) { c.fields(&codec{b: b[:ChunkIndexSize], enc: true}) }

// RAFSChunkIndex packs a RAFS chunk address: the low byte of the device id
// is blob index + 1, and the ci index's high byte and low 16 bits go into
// the device id's high byte and Advise.
func RAFSChunkIndex(blob, ci, blkaddr uint32) ChunkIndex {
	return ChunkIndex{Advise: uint16(ci), DeviceID: uint16(blob+1)&0xff | uint16(ci>>16)<<8, BlkAddr: blkaddr}
}

// RAFSBlob is the blob index a RAFS entry names; ok is false when the
// device byte is 0 (no blob).
func (c *ChunkIndex) RAFSBlob() (blob uint32, ok bool) {
	d := uint32(c.DeviceID & 0xff)
	return d - 1, d != 0
}

// RAFSCI is the ci index a RAFS entry names.
func (c *ChunkIndex) RAFSCI() uint32 { return uint32(c.DeviceID>>8)<<16 | uint32(c.Advise) }

// Dirent is one 12-byte EROFS directory entry. A directory block holds
// the entries, then their names; the first entry's NameOff (a multiple of
// 12) gives the number of entries, and each name runs to the next entry's
// NameOff (the last one to the end of the block or its first NUL).
type Dirent struct {
	Nid      uint64
	NameOff  uint16
	FileType uint8
}

func (d *Dirent) fields(f *codec) {
	f.u64(0, &d.Nid)
	f.u16(8, &d.NameOff)
	f.u8(10, &d.FileType)
}

// Decode reads the entry from b[:DirentSize]; Encode writes it there.
func (d *Dirent) Decode(b []byte) { d.fields(&codec{b: b[:DirentSize]}) }
func (d *Dirent) Encode(b []byte) { d.fields(&codec{b: b[:DirentSize], enc: true}) }

// EROFS file types in dirents.
const (
	FTUnknown = 0
	FTRegular = 1
	FTDir     = 2
	FTChrdev  = 3
	FTBlkdev  = 4
	FTFifo    = 5
	FTSock    = 6
	FTSymlink = 7
)

// fileTypeModes maps each dirent file type to its S_IFMT bits.
var fileTypeModes = [...]uint32{
	FTRegular: syscall.S_IFREG, FTDir: syscall.S_IFDIR, FTChrdev: syscall.S_IFCHR, FTBlkdev: syscall.S_IFBLK,
	FTFifo: syscall.S_IFIFO, FTSock: syscall.S_IFSOCK, FTSymlink: syscall.S_IFLNK,
}

// FileTypeMode is the S_IFMT bits of dirent file type t (0 if unknown).
func FileTypeMode(t uint8) uint32 {
	if int(t) < len(fileTypeModes) {
		return fileTypeModes[t]
	}
	return 0
}

// ModeFileType is the dirent file type of a mode (FTUnknown if none).
func ModeFileType(mode uint32) uint8 {
	for t, m := range fileTypeModes {
		if m != 0 && m == mode&syscall.S_IFMT {
			return uint8(t)
		}
	}
	return FTUnknown
}

// Inline xattrs: a 12-byte header (byte 4: the shared xattr count), the
// shared xattr ids (u32 each), then entries of a 4-byte XattrEntry, the
// name suffix and the value, each padded to 4 bytes.
const (
	XattrIbodyHeaderSize = 12
	XattrEntrySize       = 4
)

// XattrEntry is the 4-byte header of one EROFS xattr entry.
type XattrEntry struct {
	NameLen   uint8
	NameIndex uint8
	ValueSize uint16
}

// Decode reads the header from b[:XattrEntrySize].
func (x *XattrEntry) Decode(b []byte) {
	_ = b[XattrEntrySize-1]
	*x = XattrEntry{NameLen: b[0], NameIndex: b[1], ValueSize: le.Uint16(b[2:])}
}

// Encode writes the header to b[:XattrEntrySize].
func (x *XattrEntry) Encode(b []byte) {
	_ = b[XattrEntrySize-1]
	b[0], b[1] = x.NameLen, x.NameIndex
	le.PutUint16(b[2:], x.ValueSize)
}

// Size is the entry's padded size, header, name and value included.
func (x *XattrEntry) Size() uint64 {
	return AlignUp(XattrEntrySize+uint64(x.NameLen)+uint64(x.ValueSize), 4)
}

// XattrPrefix is one name prefix EROFS numbers; Exact prefixes are whole
// names (the suffix is empty).
type XattrPrefix struct {
	Index  uint8
	Prefix string
	Exact  bool
}

// XattrPrefixes are the prefixes nydus and EROFS accept, by index.
var XattrPrefixes = [...]XattrPrefix{
	{1, "user.", false},
	{2, "system.posix_acl_access", true},
	{3, "system.posix_acl_default", true},
	{4, "trusted.", false},
	{6, "security.", false},
}

// XattrPrefixOf returns the prefix with index idx.
func XattrPrefixOf(idx uint8) (string, bool) {
	for _, p := range XattrPrefixes {
		if p.Index == idx {
			return p.Prefix, true
		}
	}
	return "", false
}

// SplitXattrName splits a full xattr name into its prefix index and
// suffix; ok is false when no prefix fits.
func SplitXattrName(name string) (idx uint8, suffix string, ok bool) {
	for _, p := range XattrPrefixes {
		if p.Exact {
			if name == p.Prefix {
				return p.Index, "", true
			}
			continue
		}
		if strings.HasPrefix(name, p.Prefix) && len(name) > len(p.Prefix) {
			return p.Index, name[len(p.Prefix):], true
		}
	}
	return 0, "", false
}
