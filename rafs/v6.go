package rafs

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/layout"
)

func isV6(d []byte) bool {
	return len(d) >= layout.SuperOffset+layout.SuperSize && le.Uint32(d[layout.SuperOffset:]) == layout.ErofsMagic
}

// v6Inode holds the v6 fields the generic Inode does not.
type v6Inode struct {
	off       uint64 // byte offset of the inode
	isize     uint64 // 32 or 64
	xsize     uint64 // inline xattr bytes
	layout    uint8
	iu        uint32
	chunkBits uint32 // plain EROFS only
}

// v6 is an open RAFS v6 (or plain EROFS) bootstrap.
type v6 struct {
	d         []byte
	rafs      bool
	tarfs     bool
	bs        uint64 // block size
	blkbits   uint8
	rootNid   uint64
	metaBase  uint64
	xattrBase uint64
	buildTime uint64
	inos      uint64
	buildNsec uint32
	flags     uint64
	chunkSize uint64
	blobs     []*blob

	chunkTable []byte // bootstrap chunk info table (may be empty)
	prefetch   []uint32

	ctOnce sync.Once
	ctMap  map[uint64]uint32 // (blob<<32|ci) → chunk table entry

	hlOnce sync.Once
	hlMap  map[uint64]uint64 // i_ino → canonical nid for hard links
	hlErr  error
}

func openV6(d []byte, allowPlain bool) (*v6, error) {
	b, err := span(d, layout.SuperOffset, layout.SuperSize, "erofs superblock")
	if err != nil {
		return nil, err
	}
	var sb layout.SuperBlock
	sb.Decode(b)
	m := &v6{d: d, blkbits: sb.BlkSzBits, rootNid: uint64(sb.RootNid), inos: sb.Inos,
		buildTime: sb.BuildTime, buildNsec: sb.BuildTimeNsec, rafs: sb.FeatureCompat&layout.CompatRAFSV6 != 0}
	extraDevs := uint64(sb.ExtraDevices)
	if m.rafs {
		err = m.checkRAFSSuper(&sb)
	} else {
		extraDevs, err = m.checkPlainSuper(&sb, allowPlain)
	}
	if err != nil {
		return nil, err
	}
	if sb.ExtSlots != 0 {
		return nil, formatErr("v6: sb_extslots %d must be 0", sb.ExtSlots)
	}
	if sb.Inos == 0 {
		return nil, formatErr("v6: inode count is 0")
	}
	m.bs = 1 << m.blkbits
	size := uint64(len(d))
	if m.rafs && (size < 4096 || size%m.bs != 0) {
		return nil, formatErr("v6: bootstrap size %d is not a multiple of the %d-byte block", size, m.bs)
	}
	m.metaBase = uint64(sb.MetaBlkAddr) * m.bs
	m.xattrBase = uint64(sb.XattrBlkAddr) * m.bs
	if m.metaBase >= size {
		return nil, formatErr("v6: meta_blkaddr %d is past the end of the %d-byte bootstrap", sb.MetaBlkAddr, size)
	}
	devs, err := m.devices(uint64(sb.DevtSlotOff), extraDevs)
	if err != nil {
		return nil, err
	}
	if m.rafs {
		err = m.rafsBlobs(devs)
	} else {
		m.plainBlobs(devs)
	}
	if err != nil {
		return nil, err
	}
	root, err := m.inode(m.rootNid)
	if err != nil {
		return nil, formatErr("v6: root inode: %v", err)
	}
	if !root.IsDir() {
		return nil, formatErr("v6: root inode (nid %d) is not a directory", m.rootNid)
	}
	return m, nil
}

// checkRAFSSuper applies the rules nydus has for a RAFS v6 superblock.
func (m *v6) checkRAFSSuper(sb *layout.SuperBlock) error {
	switch {
	case sb.Checksum != 0:
		return formatErr("v6: superblock checksum %#x, RAFS requires 0", sb.Checksum)
	case m.blkbits != 12 && m.blkbits != 9:
		return formatErr("v6: block size bits %d, want 12 (or 9 for tarfs)", m.blkbits)
	case sb.FeatureIncompat != layout.IncompatRAFS:
		return formatErr("v6: feature_incompat %#x, want 0xc", sb.FeatureIncompat)
	case sb.DevtSlotOff != layout.RAFSDevtSlotOff:
		return formatErr("v6: device table slot offset %d, want 11", sb.DevtSlotOff)
	case sb.XattrBlkAddr != 0 || sb.U1 != 0:
		return formatErr("v6: xattr_blkaddr %d / u1 %d must be 0", sb.XattrBlkAddr, sb.U1)
	}
	return nil
}

// checkPlainSuper checks a plain EROFS superblock (and its checksum) and
// returns the number of extra devices it has.
func (m *v6) checkPlainSuper(sb *layout.SuperBlock, allowPlain bool) (uint64, error) {
	if !allowPlain {
		return 0, formatErr("plain EROFS image, not RAFS v6 (feature_compat %#x lacks 0x40000000)", sb.FeatureCompat)
	}
	if m.blkbits < 9 || m.blkbits > 16 {
		return 0, formatErr("erofs: block size bits %d", m.blkbits)
	}
	if sb.FeatureIncompat&^layout.IncompatRAFS != 0 {
		return 0, formatErr("erofs: unsupported feature_incompat %#x (compression?)", sb.FeatureIncompat)
	}
	if sb.FeatureCompat&layout.CompatSBChecksum != 0 {
		bs := uint64(1) << m.blkbits
		blk, err := span(m.d, layout.SuperOffset, bs-layout.SuperOffset, "erofs checksummed block")
		if err != nil {
			return 0, err
		}
		c := make([]byte, len(blk))
		copy(c, blk)
		le.PutUint32(c[4:], 0)
		if got := ^crc32.Checksum(c, castagnoli); got != sb.Checksum {
			return 0, formatErr("erofs: superblock checksum %#x, computed %#x", sb.Checksum, got)
		}
	}
	if sb.FeatureIncompat&layout.IncompatDevTable == 0 {
		return 0, nil
	}
	return uint64(sb.ExtraDevices), nil
}

// devices decodes the device table.
func (m *v6) devices(slot, n uint64) ([]layout.DeviceSlot, error) {
	if n > maxBlobs {
		return nil, formatErr("v6: %d devices (at most %d)", n, maxBlobs)
	}
	devt, err := span(m.d, slot*layout.DeviceSlotSize, n*layout.DeviceSlotSize, "v6 device table")
	if err != nil {
		return nil, err
	}
	devs := make([]layout.DeviceSlot, n)
	for i := range devs {
		devs[i].Decode(devt[i*layout.DeviceSlotSize:])
	}
	return devs, nil
}

// rafsBlobs reads the extended superblock and blob table and matches the
// blobs with their device slots.
func (m *v6) rafsBlobs(devs []layout.DeviceSlot) error {
	if err := m.parseExt(); err != nil {
		return err
	}
	if len(m.blobs) != len(devs) {
		return formatErr("v6: %d blobs but %d device slots", len(m.blobs), len(devs))
	}
	seen := map[string]bool{}
	for i, dv := range devs {
		if dv.Tag != m.blobs[i].id {
			return formatErr("v6: device slot %d names %q, blob table says %q", i, dv.Tag, m.blobs[i].id)
		}
		if seen[dv.Tag] {
			return formatErr("v6: blob %s appears twice", dv.Tag)
		}
		seen[dv.Tag] = true
		if dv.Blocks == 0 && !m.tarfs {
			return formatErr("v6: device slot %d has 0 blocks", i)
		}
		m.blobs[i].mappedBlkaddr = dv.MappedBlkAddr
		m.blobs[i].blocks = dv.Blocks
	}
	return nil
}

// plainBlobs makes a raw blob of each plain EROFS device.
func (m *v6) plainBlobs(devs []layout.DeviceSlot) {
	m.flags = flagExplicitUIDGID | flagHasXattr
	for i, dv := range devs {
		id := dv.Tag
		if id == "" {
			id = "erofs-device-" + string(rune('1'+i%9))
		}
		m.blobs = append(m.blobs, &blob{index: i, id: id, raw: true, blocks: dv.Blocks, mappedBlkaddr: dv.MappedBlkAddr})
	}
}

// parseExt decodes the RAFS v6 extended superblock and the tables it names.
func (m *v6) parseExt() error {
	d := m.d
	b, err := span(d, layout.ExtSuperOffset, layout.ExtSuperSize, "v6 extended superblock")
	if err != nil {
		return err
	}
	var ext layout.ExtSuperBlock
	ext.Decode(b)
	m.flags, m.chunkSize = ext.Flags, uint64(ext.ChunkSize)
	btOff, btSize := ext.BlobTableOffset, uint64(ext.BlobTableSize)
	ctOff, ctSize := ext.ChunkTableOffset, ext.ChunkTableSize
	if err := checkSuperFlags(m.flags, true); err != nil {
		return err
	}
	m.tarfs = m.flags&flagTarfs != 0
	if m.tarfs != (m.blkbits == 9) {
		return formatErr("v6: block size %d does not match the tarfs flag", m.bs)
	}
	if !isPow2(m.chunkSize) || m.chunkSize < 4096 || m.chunkSize > maxChunkSize {
		return formatErr("v6: chunk size %#x", m.chunkSize)
	}
	const es = layout.BlobEntryV6Size
	if btOff%4096 != 0 || btOff < 4096 || btSize%es != 0 || btSize/es > maxBlobs {
		return formatErr("v6: blob table at %#x, %d bytes", btOff, btSize)
	}
	bt, err := span(d, btOff, btSize, "v6 blob table")
	if err != nil {
		return err
	}
	for i := uint64(0); i < btSize/es; i++ {
		b, err := parseV6BlobEntry(bt[i*es:(i+1)*es], uint32(i), uint32(m.chunkSize), m.tarfs)
		if err != nil {
			return err
		}
		m.blobs = append(m.blobs, b)
	}
	size := uint64(len(d))
	// The snapshotter used to truncate bootstraps at the chunk table, so
	// a table past the end is dropped, not an error.
	if ctSize > 0 {
		if ctSize%chunkInfoV5Size != 0 || ctOff%4096 != 0 {
			return formatErr("v6: chunk table at %#x, %d bytes", ctOff, ctSize)
		}
		if ctOff < size && ctSize <= size-ctOff {
			m.chunkTable = d[ctOff : ctOff+ctSize]
		}
	}
	if pfSize := uint64(ext.PrefetchTableSize); pfSize > 0 && ext.PrefetchTableOffset != 0 {
		pf, err := span(d, ext.PrefetchTableOffset, pfSize&^3, "v6 prefetch table")
		if err != nil {
			return err
		}
		m.prefetch = layout.DecodePrefetch(pf)
	}
	if btOff < m.metaBase && btOff+btSize > m.metaBase {
		return formatErr("v6: blob table overlaps the inode area")
	}
	return nil
}

func parseV6BlobEntry(raw []byte, idx, chunkSize uint32, tarfs bool) (*blob, error) {
	var e layout.BlobEntry
	e.Decode(raw)
	b := &blob{
		index:          int(idx),
		id:             e.ID,
		chunkSize:      e.ChunkSize,
		chunkCount:     e.ChunkCount,
		compression:    e.Compressor,
		digestAlgo:     e.Digester,
		features:       e.Features,
		compressedSize: e.CompressedSize,
		uncompSize:     e.UncompressedSize,
		tocSize:        e.TOCSize,
		tocDigest:      e.TOCDigest,
		ciCompressor:   e.CICompressor,
		ciOffset:       e.CIOffset,
		ciCSize:        e.CICompressedSize,
		ciUSize:        e.CIUncompressed,
		cipher:         e.Cipher,
		raw:            tarfs,
		hasCI:          true,
	}
	if b.id == "" || strings.IndexByte(b.id, '/') >= 0 {
		return nil, formatErr("v6 blob %d: bad blob id %q", idx, b.id)
	}
	if e.Index != idx {
		return nil, formatErr("v6 blob %d: blob_index field says %d", idx, e.Index)
	}
	if b.chunkSize != chunkSize {
		return nil, formatErr("v6 blob %d: chunk size %#x, superblock says %#x", idx, b.chunkSize, chunkSize)
	}
	if b.chunkCount > maxChunkCount || b.compressedSize > 1<<40 || b.uncompSize > 1<<44 {
		return nil, formatErr("v6 blob %d: absurd sizes (chunks %d, compressed %d, uncompressed %d)", idx, b.chunkCount, b.compressedSize, b.uncompSize)
	}
	if b.compression > CompressZstd || b.digestAlgo > DigestSHA256 || b.ciCompressor > CompressZstd {
		return nil, formatErr("v6 blob %d: unknown compression %d / digest %d / ci compressor %d", idx, b.compression, b.digestAlgo, b.ciCompressor)
	}
	if b.features&layout.BlobFeatureLowMask&^layout.BlobFeatureLowOK != 0 || b.features&layout.BlobV5NoExtTable != 0 {
		return nil, formatErr("v6 blob %d: invalid features %#x", idx, b.features)
	}
	if !tarfs && b.features&layout.BlobAligned == 0 {
		return nil, formatErr("v6 blob %d: features %#x lack ALIGNED", idx, b.features)
	}
	if b.ciCSize > b.ciUSize {
		return nil, formatErr("v6 blob %d: ci compressed size %d > uncompressed %d", idx, b.ciCSize, b.ciUSize)
	}
	if b.ciUSize > uint64(maxChunkCount)*layout.CIV2Size*2 {
		return nil, formatErr("v6 blob %d: ci array of %d bytes", idx, b.ciUSize)
	}
	return b, nil
}

func (m *v6) version() int       { return 6 }
func (m *v6) rootID() uint64     { return m.rootNid }
func (m *v6) superFlags() uint64 { return m.flags }
func (m *v6) blobTable() []*blob { return m.blobs }

// inode decodes the inode at nid.
func (m *v6) inode(nid uint64) (*Inode, error) {
	if nid > (uint64(len(m.d))-m.metaBase)/layout.InodeSlotSize {
		return nil, formatErr("v6: nid %d is past the end of the bootstrap", nid)
	}
	off := m.metaBase + nid*layout.InodeSlotSize
	b, err := span(m.d, off, layout.InodeCompactSize, "v6 inode")
	if err != nil {
		return nil, err
	}
	if b[0]&1 != 0 {
		if b, err = span(m.d, off, layout.InodeExtendedSize, "v6 extended inode"); err != nil {
			return nil, err
		}
	}
	var di layout.Inode
	di.Decode(b)
	// Bit 4 is NLINK_1 for compact inodes of newer plain EROFS images;
	// nydus rejects every bit above bit 3.
	if !m.rafs && !di.Extended() && di.Format&0x10 != 0 {
		di.Format &^= 0x10
		di.Nlink = 1
	}
	if di.Format > 0xf {
		return nil, formatErr("v6: nid %d: i_format %#x has unknown bits", nid, di.Format)
	}
	n := &Inode{id: nid, Mode: uint32(di.Mode), Nlink: di.Nlink, Size: di.Size, Mtime: di.Mtime,
		MtimeNsec: di.MtimeNsec, rawIno: uint64(di.Ino), UID: di.UID, GID: di.GID}
	if !di.Extended() {
		n.Mtime += m.buildTime
		n.MtimeNsec = m.buildNsec
	}
	n.v6 = v6Inode{off: off, isize: di.ISize(), xsize: di.XattrSize(), layout: di.Layout(), iu: di.U}
	if _, err := span(m.d, off, n.v6.isize+n.v6.xsize, "v6 inode xattrs"); err != nil {
		return nil, err
	}
	n.Blocks = (n.Size + 511) / 512
	switch n.Mode & syscall.S_IFMT {
	case syscall.S_IFDIR, syscall.S_IFLNK:
		if n.v6.layout != layout.LayoutFlatPlain && n.v6.layout != layout.LayoutFlatInline {
			return nil, formatErr("v6: nid %d: directory/symlink with data layout %d", nid, n.v6.layout)
		}
		if n.IsSymlink() && n.Size > maxSymlinkLen {
			return nil, formatErr("v6: nid %d: symlink target of %d bytes", nid, n.Size)
		}
		if n.IsDir() && n.Size > 1<<32 {
			return nil, formatErr("v6: nid %d: directory of %d bytes", nid, n.Size)
		}
	case syscall.S_IFREG:
		switch n.v6.layout {
		case layout.LayoutFlatPlain, layout.LayoutFlatInline:
			if m.rafs && n.Size > 0 {
				return nil, formatErr("v6: nid %d: RAFS regular file with flat layout", nid)
			}
		case layout.LayoutChunkBased:
			if err := m.checkChunkArray(n); err != nil {
				return nil, err
			}
		default:
			return nil, formatErr("v6: nid %d: unsupported data layout %d (compressed EROFS)", nid, n.v6.layout)
		}
	case syscall.S_IFCHR, syscall.S_IFBLK, syscall.S_IFIFO, syscall.S_IFSOCK:
		n.Rdev = n.v6.iu
		if n.Mode&syscall.S_IFMT == syscall.S_IFIFO || n.Mode&syscall.S_IFMT == syscall.S_IFSOCK {
			n.Rdev = 0
		}
	default:
		return nil, formatErr("v6: nid %d: bad mode %#o", nid, n.Mode)
	}
	return n, nil
}

// chunkGeometry returns a chunk-based file's chunk size, entry size and
// the offset of its chunk index array.
func (m *v6) chunkGeometry(n *Inode) (cs, unit, pos uint64) {
	cfmt := n.v6.iu & 0xffff
	if m.rafs {
		cs, unit = m.chunkSize, 8
	} else {
		cs = uint64(1) << (uint64(m.blkbits) + uint64(cfmt&layout.ChunkFormatBlkbits))
		unit = 4
		if cfmt&layout.ChunkFormatIndexes != 0 {
			unit = 8
		}
	}
	return cs, unit, alignUp(n.v6.off+n.v6.isize+n.v6.xsize, unit)
}

func (m *v6) checkChunkArray(n *Inode) error {
	cfmt := n.v6.iu & 0xffff
	if m.rafs && cfmt&layout.ChunkFormatIndexes == 0 {
		return formatErr("v6: nid %d: chunk format %#x lacks INDEXES", n.id, cfmt)
	}
	if !m.rafs && uint64(m.blkbits)+uint64(cfmt&layout.ChunkFormatBlkbits) > 30 {
		return formatErr("erofs: nid %d: chunk bits %d", n.id, cfmt&layout.ChunkFormatBlkbits)
	}
	cs, unit, pos := m.chunkGeometry(n)
	count := (n.Size + cs - 1) / cs
	if n.Size > 1<<50 || count > uint64(len(m.d))/unit {
		return formatErr("v6: nid %d: %d-byte file needs %d chunk entries", n.id, n.Size, count)
	}
	_, err := span(m.d, pos, count*unit, "v6 chunk index array")
	return err
}

// ino maps a nid to its FUSE inode number: the root is 1 (and nid 1, if
// it exists, takes the root's nid), and hard links separated into several
// inodes with one i_ino all report the smallest nid among them.
func (m *v6) ino(n *Inode) uint64 {
	nid := n.id
	if n.Nlink > 1 && !n.IsDir() {
		nid = m.canonical(n)
	}
	switch nid {
	case m.rootNid:
		return RootIno
	case RootIno:
		return m.rootNid
	}
	return nid
}

func (m *v6) idOf(ino uint64) (uint64, error) {
	switch ino {
	case RootIno:
		return m.rootNid, nil
	case m.rootNid:
		return RootIno, nil
	}
	return ino, nil
}

func (m *v6) canonical(n *Inode) uint64 {
	m.hlOnce.Do(func() {
		m.hlMap = map[uint64]uint64{}
		m.hlErr = walkIDs(m, func(id uint64, c *Inode) error {
			if c.Nlink > 1 && !c.IsDir() {
				if old, ok := m.hlMap[c.rawIno]; !ok || id < old {
					m.hlMap[c.rawIno] = id
				}
			}
			return nil
		})
	})
	if c, ok := m.hlMap[n.rawIno]; ok {
		if cn, err := m.inode(c); err == nil && cn.Mode == n.Mode && cn.Size == n.Size {
			return c
		}
	}
	return n.id
}

// walkIDs visits every inode reachable from the root once, refusing
// directory cycles. It is used only for the hard-link index.
func walkIDs(m format, fn func(id uint64, n *Inode) error) error {
	seenDirs := map[uint64]bool{}
	var visit func(id uint64, depth int) error
	visit = func(id uint64, depth int) error {
		if depth > 4096 {
			return formatErr("directory tree deeper than 4096")
		}
		n, err := m.inode(id)
		if err != nil {
			return err
		}
		if err := fn(id, n); err != nil || !n.IsDir() {
			return err
		}
		if seenDirs[id] {
			return formatErr("directory cycle at inode %d", id)
		}
		seenDirs[id] = true
		var kids []uint64
		err = m.readdir(n, 0, func(name string, cid uint64, _ uint32, _ uint64) bool {
			if name != "." && name != ".." {
				kids = append(kids, cid)
			}
			return true
		})
		if err != nil {
			return err
		}
		for _, c := range kids {
			if err := visit(c, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return visit(m.rootID(), 0)
}

// block returns the k-th data block of a flat inode (the tail block of a
// FLAT_INLINE inode sits right after the inode and its xattrs).
func (m *v6) block(n *Inode, k uint64) ([]byte, error) {
	nblocks := (n.Size + m.bs - 1) / m.bs
	if k >= nblocks {
		return nil, formatErr("v6: nid %d: block %d of %d", n.id, k, nblocks)
	}
	length := m.bs
	if k == nblocks-1 {
		length = n.Size - k*m.bs
	}
	if n.v6.layout == layout.LayoutFlatInline && k == nblocks-1 {
		pos := n.v6.off + n.v6.isize + n.v6.xsize
		if pos%m.bs+length > m.bs {
			return nil, formatErr("v6: nid %d: inline data crosses a block boundary", n.id)
		}
		return span(m.d, pos, length, "v6 inline data")
	}
	return span(m.d, (uint64(n.v6.iu)+k)*m.bs, length, "v6 data block")
}

// flatData returns the whole data of a flat inode.
func (m *v6) flatData(n *Inode) ([]byte, bool, error) {
	if n.v6.layout == layout.LayoutChunkBased {
		return nil, false, nil
	}
	if n.Size == 0 {
		return nil, true, nil
	}
	nblocks := (n.Size + m.bs - 1) / m.bs
	if n.v6.layout == layout.LayoutFlatPlain || nblocks == 1 {
		if n.v6.layout == layout.LayoutFlatPlain {
			b, err := span(m.d, uint64(n.v6.iu)*m.bs, n.Size, "v6 flat data")
			return b, true, err
		}
		b, err := m.block(n, 0)
		return b, true, err
	}
	// Check that the non-inline blocks exist before allocating for them.
	if _, err := span(m.d, uint64(n.v6.iu)*m.bs, (nblocks-1)*m.bs, "v6 data blocks"); err != nil {
		return nil, true, err
	}
	out := make([]byte, 0, n.Size)
	for k := uint64(0); k < nblocks; k++ {
		b, err := m.block(n, k)
		if err != nil {
			return nil, true, err
		}
		out = append(out, b...)
	}
	return out, true, nil
}

func (m *v6) readlink(n *Inode) ([]byte, error) {
	b, _, err := m.flatData(n)
	return b, err
}

// dirent is one decoded directory entry inside a block.
type v6Dirent struct {
	nid   uint64
	ftype uint8
	name  []byte
}

// dirBlock decodes the entries of one directory block.
func (m *v6) dirBlock(b []byte, fn func(i int, e v6Dirent) bool) error {
	if len(b) < layout.DirentSize {
		return formatErr("v6: directory block of %d bytes", len(b))
	}
	var e, next layout.Dirent
	e.Decode(b)
	first := uint64(e.NameOff)
	if first < layout.DirentSize || first%layout.DirentSize != 0 || first > uint64(len(b)) {
		return formatErr("v6: directory block: first nameoff %d", first)
	}
	count := int(first / layout.DirentSize)
	for i := 0; i < count; i++ {
		start, end := uint64(e.NameOff), uint64(len(b))
		if i+1 < count {
			next.Decode(b[(i+1)*layout.DirentSize:])
			end = uint64(next.NameOff)
		}
		if start < first || end < start || end > uint64(len(b)) {
			return formatErr("v6: directory entry %d: name range [%d, %d)", i, start, end)
		}
		name := b[start:end]
		if i+1 == count {
			if z := bytes.IndexByte(name, 0); z >= 0 {
				name = name[:z]
			}
		}
		if len(name) == 0 || len(name) > maxNameLen {
			return formatErr("v6: directory entry %d: name of %d bytes", i, len(name))
		}
		if !fn(i, v6Dirent{nid: e.Nid, ftype: e.FileType, name: name}) {
			return nil
		}
		e = next
	}
	return nil
}

func (m *v6) dirBlocks(n *Inode) uint64 { return (n.Size + m.bs - 1) / m.bs }

const cookieBlock = 8192 // readdir cookies: block*8192 + entry + 1

func (m *v6) readdir(n *Inode, off uint64, fn func(name string, id uint64, dtype uint32, next uint64) bool) error {
	nb := m.dirBlocks(n)
	for k := off / cookieBlock; k < nb; k++ {
		skip := 0
		if k == off/cookieBlock {
			skip = int(off % cookieBlock)
		}
		b, err := m.block(n, k)
		if err != nil {
			return err
		}
		stop := false
		err = m.dirBlock(b, func(i int, e v6Dirent) bool {
			if i < skip {
				return true
			}
			if !fn(string(e.name), e.nid, layout.FileTypeMode(e.ftype), k*cookieBlock+uint64(i)+1) {
				stop = true
				return false
			}
			return true
		})
		if err != nil || stop {
			return err
		}
	}
	return nil
}

// lookup binary-searches the sorted directory blocks, then the block.
func (m *v6) lookup(n *Inode, name string) (uint64, error) {
	nb := m.dirBlocks(n)
	key := []byte(name)
	var ferr error
	firstName := func(k uint64) []byte {
		b, err := m.block(n, k)
		if err != nil {
			ferr = err
			return nil
		}
		var first []byte
		if err := m.dirBlock(b, func(_ int, e v6Dirent) bool { first = e.name; return false }); err != nil {
			ferr = err
		}
		return first
	}
	// The last block whose first name is <= key.
	k := sort.Search(int(nb), func(i int) bool { return bytes.Compare(firstName(uint64(i)), key) > 0 }) - 1
	if ferr != nil {
		return 0, ferr
	}
	if k < 0 {
		return 0, syscall.ENOENT
	}
	b, err := m.block(n, uint64(k))
	if err != nil {
		return 0, err
	}
	var ents []v6Dirent
	if err := m.dirBlock(b, func(_ int, e v6Dirent) bool { ents = append(ents, e); return true }); err != nil {
		return 0, err
	}
	i := sort.Search(len(ents), func(i int) bool { return bytes.Compare(ents[i].name, key) >= 0 })
	if i < len(ents) && bytes.Equal(ents[i].name, key) {
		return ents[i].nid, nil
	}
	return 0, syscall.ENOENT
}

// xattrEntry decodes one EROFS xattr entry at the start of b and returns
// it with its padded length.
func xattrEntry(b []byte) (Xattr, uint64, error) {
	if len(b) < layout.XattrEntrySize {
		return Xattr{}, 0, formatErr("xattr entry: %d bytes", len(b))
	}
	var e layout.XattrEntry
	e.Decode(b)
	nl, vl := uint64(e.NameLen), uint64(e.ValueSize)
	body, err := span(b, layout.XattrEntrySize, nl+vl, "xattr entry")
	if err != nil {
		return Xattr{}, 0, err
	}
	prefix, ok := layout.XattrPrefixOf(e.NameIndex)
	if !ok {
		return Xattr{}, 0, formatErr("xattr entry: unsupported name index %d", e.NameIndex)
	}
	x := Xattr{Name: prefix + string(body[:nl]), Value: append([]byte(nil), body[nl:]...)}
	return x, e.Size(), nil
}

func (m *v6) xattrs(n *Inode) ([]Xattr, error) {
	if n.v6.xsize == 0 {
		return nil, nil
	}
	area, err := span(m.d, n.v6.off+n.v6.isize, n.v6.xsize, "v6 xattrs")
	if err != nil {
		return nil, err
	}
	shared := uint64(area[4])
	const hdr = layout.XattrIbodyHeaderSize
	if hdr+4*shared > uint64(len(area)) {
		return nil, formatErr("v6: nid %d: %d shared xattrs do not fit", n.id, shared)
	}
	var out []Xattr
	for i := uint64(0); i < shared; i++ {
		id := uint64(le.Uint32(area[hdr+4*i:]))
		if m.rafs {
			return nil, formatErr("v6: nid %d: RAFS has no shared xattrs", n.id)
		}
		p := m.xattrBase + id*4
		if p >= uint64(len(m.d)) {
			return nil, formatErr("v6: nid %d: shared xattr %d is past the end", n.id, id)
		}
		x, _, err := xattrEntry(m.d[p:min(uint64(len(m.d)), p+4+255+65535)])
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	rest := area[hdr+4*shared:]
	for len(rest) >= 4 {
		x, l, err := xattrEntry(rest)
		if err != nil {
			return nil, fmt.Errorf("v6: nid %d: %w", n.id, err)
		}
		out = append(out, x)
		if l >= uint64(len(rest)) {
			break
		}
		rest = rest[l:]
	}
	return out, nil
}

// chunks resolves the chunk index entries of a regular file over [off, end).
func (m *v6) chunks(n *Inode, off, end uint64, fn func(c chunkRef) error) error {
	cs, unit, pos := m.chunkGeometry(n)
	for k := off / cs; k*cs < end && k*cs < n.Size; k++ {
		e, err := span(m.d, pos+k*unit, unit, "v6 chunk index")
		if err != nil {
			return err
		}
		c := chunkRef{fileOff: k * cs, length: uint32(min(cs, n.Size-k*cs))}
		var ix layout.ChunkIndex
		if unit == 4 {
			ix.BlkAddr = le.Uint32(e)
			c.primary = true
		} else {
			ix.Decode(e)
			switch {
			case m.rafs:
				blob, ok := ix.RAFSBlob()
				if !ok {
					return formatErr("v6: nid %d chunk %d: blob index 0 (device id %#x)", n.id, k, ix.DeviceID)
				}
				c.blob, c.ciIndex = blob, ix.RAFSCI()
			case ix.DeviceID == 0:
				c.primary = true
			default:
				c.blob = uint32(ix.DeviceID) - 1
			}
		}
		blk := uint64(ix.BlkAddr)
		if blk == layout.NullAddr && !m.rafs {
			c.hole = true
		}
		c.blkaddr = blk * m.bs
		if !c.primary && int(c.blob) >= len(m.blobs) {
			return formatErr("v6: nid %d chunk %d: blob index %d of %d", n.id, k, c.blob, len(m.blobs))
		}
		if m.rafs && !m.tarfs {
			c.needCI = true
		} else {
			c.ci = ChunkInfo{CompressedOffset: c.blkaddr, CompressedSize: c.length, UncompressedOffset: c.blkaddr, UncompressedSize: c.length}
		}
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

// chunkTableEntry finds the bootstrap chunk table entry of (blob, ci).
func (m *v6) chunkTableEntry(blobIdx, ci uint32) (ChunkInfo, bool) {
	m.ctOnce.Do(func() {
		m.ctMap = make(map[uint64]uint32, len(m.chunkTable)/chunkInfoV5Size)
		var e layout.ChunkInfoV5
		for i := 0; i+chunkInfoV5Size <= len(m.chunkTable); i += chunkInfoV5Size {
			e.Decode(m.chunkTable[i:])
			m.ctMap[uint64(e.BlobIndex)<<32|uint64(e.Index)] = uint32(i)
		}
	})
	i, ok := m.ctMap[uint64(blobIdx)<<32|uint64(ci)]
	if !ok {
		return ChunkInfo{}, false
	}
	return decodeV5Chunk(m.chunkTable[i : i+chunkInfoV5Size]), true
}
