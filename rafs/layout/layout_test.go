package layout

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// structCodec is one fixed-size structure of the format.
type structCodec interface {
	Decode([]byte)
	Encode([]byte)
}

// structs lists every fixed-size structure with its size.
func structs() []struct {
	name string
	size int
	new  func() structCodec
} {
	return []struct {
		name string
		size int
		new  func() structCodec
	}{
		{"SuperBlock", SuperSize, func() structCodec { return new(SuperBlock) }},
		{"ExtSuperBlock", ExtSuperSize, func() structCodec { return new(ExtSuperBlock) }},
		{"DeviceSlot", DeviceSlotSize, func() structCodec { return new(DeviceSlot) }},
		{"BlobEntry", BlobEntryV6Size, func() structCodec { return new(BlobEntry) }},
		{"InodeCompact", InodeCompactSize, func() structCodec { return new(compactInode) }},
		{"InodeExtended", InodeExtendedSize, func() structCodec { return new(extendedInode) }},
		{"ChunkIndex", ChunkIndexSize, func() structCodec { return new(ChunkIndex) }},
		{"Dirent", DirentSize, func() structCodec { return new(Dirent) }},
		{"XattrEntry", XattrEntrySize, func() structCodec { return new(XattrEntry) }},
		{"SuperBlockV5", SuperBlockV5Size, func() structCodec { return new(SuperBlockV5) }},
		{"InodeV5", V5InodeSize, func() structCodec { return new(InodeV5) }},
		{"ExtBlobEntryV5", V5ExtBlobSize, func() structCodec { return new(ExtBlobEntryV5) }},
		{"ChunkInfoV5", ChunkInfoV5Size, func() structCodec { return new(ChunkInfoV5) }},
		{"BlobMetaHeader", BlobMetaHdrSize, func() structCodec { return new(BlobMetaHeader) }},
		{"CIV1", CIV1Size, func() structCodec { return new(CIV1) }},
		{"CIV2", CIV2Size, func() structCodec { return new(CIV2) }},
		{"TOCEntry", TOCEntrySize, func() structCodec { return new(TOCEntry) }},
	}
}

// compactInode and extendedInode pick Inode's decoder by form.
type compactInode struct{ Inode }

func (n *compactInode) Decode(b []byte) { b[0] &^= 1; n.Inode.Decode(b) }

type extendedInode struct{ Inode }

func (n *extendedInode) Decode(b []byte) { b[0] |= 1; n.Inode.Decode(b) }

// roundTrip checks decode(encode(x)) == x for x = decode(b), and that
// encoding is idempotent on bytes: encode(decode(encode(x))) ==
// encode(x).
func roundTrip(t *testing.T, name string, size int, mk func() structCodec, b []byte) {
	in := make([]byte, size)
	copy(in, b)
	x := mk()
	x.Decode(in)
	enc := make([]byte, size)
	x.Encode(enc)
	y := mk()
	y.Decode(enc)
	if !reflect.DeepEqual(x, y) {
		t.Fatalf("%s: decode(encode(x)) != x\n x = %+v\n y = %+v", name, x, y)
	}
	enc2 := make([]byte, size)
	y.Encode(enc2)
	if !bytes.Equal(enc, enc2) {
		t.Fatalf("%s: encoding is not stable", name)
	}
}

func FuzzLayout(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<16 {
			return
		}
		for _, s := range structs() {
			roundTrip(t, s.name, s.size, s.new, data)
		}
		var h TarHeader
		if len(data) >= TarBlockSize && h.Decode(data[len(data)-TarBlockSize:]) == nil && h.Size < 1<<33 && len(h.Name) <= 100 {
			b := make([]byte, TarBlockSize)
			h.Encode(b)
			var g TarHeader
			if err := g.Decode(b); err != nil || g != h {
				t.Fatalf("tar header %+v: decoded back as %+v, %v", h, g, err)
			}
		}
		if len(data) > 0 {
			var c ChunkIndex
			c.Decode(append(data, make([]byte, ChunkIndexSize)...))
			if blob, ok := c.RAFSBlob(); ok {
				d := RAFSChunkIndex(blob, c.RAFSCI(), c.BlkAddr)
				if d != c {
					t.Fatalf("chunk index %+v repacks as %+v", c, d)
				}
			}
		}
		ids := DecodeBlobTableV5(data, 256)
		strs := make([]string, len(ids))
		for i, id := range ids {
			strs[i] = string(id)
		}
		again := DecodeBlobTableV5(AppendBlobTableV5(nil, strs), 256)
		if !reflect.DeepEqual(ids, again) && len(ids)+len(again) > 0 {
			t.Fatalf("v5 blob table %q decodes back as %q", ids, again)
		}
	})
}

// fixture reads a committed fixture.
func fixture(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "fixtures", p))
	if err != nil {
		t.Fatalf("fixture: %v", err)
	}
	return b
}

// TestFixtureFields decodes known fields of the committed nydus fixtures
// (the worked examples of docs/rafs-format.md) and re-encodes them to the
// same bytes.
func TestFixtureFields(t *testing.T) {
	v6 := fixture(t, "nydus/v6-2.2/rafs-v6-2.2.boot")
	var sb SuperBlock
	sb.Decode(v6[SuperOffset:])
	var ext ExtSuperBlock
	ext.Decode(v6[ExtSuperOffset:])
	if sb.Magic != ErofsMagic || sb.FeatureCompat != CompatRAFSV6 || sb.BlkSzBits != 12 || sb.FeatureIncompat != IncompatRAFS ||
		sb.DevtSlotOff != RAFSDevtSlotOff || sb.ExtraDevices != 1 {
		t.Errorf("v6 superblock: %+v", sb)
	}
	if ext.ChunkSize != 1<<20 || ext.BlobTableOffset%BlockSize != 0 || ext.BlobTableSize != BlobEntryV6Size {
		t.Errorf("v6 extended superblock: %+v", ext)
	}
	var be BlobEntry
	be.Decode(v6[ext.BlobTableOffset:])
	var slot DeviceSlot
	slot.Decode(v6[RAFSDevtSlotOff*DeviceSlotSize:])
	if be.ID != slot.Tag || be.Index != 0 || be.ChunkSize != ext.ChunkSize || be.Features&BlobAligned == 0 {
		t.Errorf("v6 blob entry %+v, device slot %+v", be, slot)
	}
	var root Inode
	off := uint64(sb.MetaBlkAddr)*BlockSize + uint64(sb.RootNid)*InodeSlotSize
	root.Decode(v6[off:])
	if root.Mode&0o170000 != 0o040000 {
		t.Errorf("v6 root inode: %+v", root)
	}
	for _, c := range []struct {
		name string
		b    []byte
		x    structCodec
	}{{"superblock", v6[SuperOffset : SuperOffset+SuperSize], &sb}, {"ext superblock", v6[ExtSuperOffset : ExtSuperOffset+ExtSuperSize], &ext},
		{"blob entry", v6[ext.BlobTableOffset:][:BlobEntryV6Size], &be}} {
		enc := make([]byte, len(c.b))
		c.x.Encode(enc)
		// Only named fields are encoded; nydus leaves the rest zero.
		if !bytes.Equal(enc, c.b) {
			t.Errorf("%s: re-encoded\n%x\nwant\n%x", c.name, enc, c.b)
		}
	}

	v5 := fixture(t, "nydus/v5-repeatable/sha256-nocompress-repeatable")
	var s5 SuperBlockV5
	s5.Decode(v5)
	if s5.Magic != V5Magic || s5.Version != V5Version || s5.SuperSize != V5SuperSize || s5.InodeTableOffset != V5SuperSize ||
		FlagDigest(s5.Flags) != DigestSHA256 || FlagCompression(s5.Flags) != CompressNone {
		t.Errorf("v5 superblock: %+v", s5)
	}
	enc := make([]byte, SuperBlockV5Size)
	s5.Encode(enc)
	if !bytes.Equal(enc, v5[:SuperBlockV5Size]) {
		t.Errorf("v5 superblock re-encoded\n%x\nwant\n%x", enc, v5[:SuperBlockV5Size])
	}
	ids := DecodeBlobTableV5(v5[s5.BlobTableOffset:][:s5.BlobTableSize], 256)
	if len(ids) != 1 || len(ids[0]) != 64 {
		t.Errorf("v5 blob table: %q", ids)
	}
}

func TestCIV1Packing(t *testing.T) {
	for _, c := range []CIV1{
		{0, 1, 0, 1},
		{0x1000, 1 << 20, 0x1234, 0x8_0000},
		{0xFFF_FFFF_F000, 1 << 24, 1<<40 - 1, 1 << 24},
	} {
		b := make([]byte, CIV1Size)
		c.Encode(b)
		var d CIV1
		d.Decode(b)
		if d != c {
			t.Errorf("%+v decodes back as %+v", c, d)
		}
	}
}

func TestXattrNames(t *testing.T) {
	for _, c := range []struct {
		name   string
		idx    uint8
		suffix string
		ok     bool
	}{
		{"user.a", 1, "a", true},
		{"system.posix_acl_access", 2, "", true},
		{"security.capability", 6, "capability", true},
		{"user.", 0, "", false},
		{"other.x", 0, "", false},
	} {
		idx, suffix, ok := SplitXattrName(c.name)
		if idx != c.idx || suffix != c.suffix || ok != c.ok {
			t.Errorf("%q: %d %q %v", c.name, idx, suffix, ok)
			continue
		}
		if p, _ := XattrPrefixOf(idx); ok && p+suffix != c.name {
			t.Errorf("%q: prefix %q", c.name, p)
		}
	}
}

func TestFileTypes(t *testing.T) {
	for ft := uint8(FTRegular); ft <= FTSymlink; ft++ {
		if got := ModeFileType(FileTypeMode(ft) | 0o644); got != ft {
			t.Errorf("file type %d -> mode %#o -> %d", ft, FileTypeMode(ft), got)
		}
	}
	if FileTypeMode(FTUnknown) != 0 || FileTypeMode(200) != 0 || ModeFileType(0) != FTUnknown {
		t.Error("unknown file types must map to 0")
	}
}

// Decoding into a local, as the reader does on every lookup, must not move
// the local to the heap.
func TestCodecsDoNotAllocate(t *testing.T) {
	b := make([]byte, BlobMetaHdrSize)
	var sink uint64
	for _, c := range []struct {
		name string
		f    func()
	}{
		{"SuperBlock", func() { var x SuperBlock; x.Decode(b); x.Encode(b); sink += x.Inos }},
		{"BlobEntry", func() { var x BlobEntry; x.Decode(b); x.Encode(b); sink += x.CIOffset }},
		{"InodeV5", func() { var x InodeV5; x.Decode(b); x.Encode(b); sink += x.Size }},
		{"ChunkInfoV5", func() { var x ChunkInfoV5; x.Decode(b); x.Encode(b); sink += x.FileOffset }},
		{"Inode", func() { var x Inode; x.Decode(b); x.Encode(b); sink += x.Size }},
		{"Dirent", func() { var x Dirent; x.Decode(b); x.Encode(b); sink += x.Nid }},
		{"BlobMetaHeader", func() { var x BlobMetaHeader; x.Decode(b); x.Encode(b); sink += x.CIOffset }},
	} {
		if n := testing.AllocsPerRun(100, c.f); n != 0 {
			t.Errorf("%s: %v allocations per decode+encode", c.name, n)
		}
	}
	_ = sink
}

func TestSuperFlagAlgorithms(t *testing.T) {
	for c := CompressNone; c <= CompressZstd; c++ {
		if got := FlagCompression(c.SuperFlag() | FlagHashSHA256); got != c {
			t.Errorf("%s -> flag %#x -> %s", c, c.SuperFlag(), got)
		}
	}
	if FlagCompression(FlagHashBlake3) != CompressLZ4 {
		t.Error("no compression flag must read as lz4_block (v5)")
	}
	for _, d := range []DigestAlgo{DigestBlake3, DigestSHA256} {
		if got := FlagDigest(d.SuperFlag()); got != d {
			t.Errorf("%s -> %s", d, got)
		}
	}
}
