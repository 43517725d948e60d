package builder

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/rafs/layout"
	"lukechampine.com/blake3"
)

// v5Rec is one inode-table entry: a name in a directory.
type v5Rec struct {
	name     string
	ino      *inode
	parent   uint64 // parent directory's index
	index    uint64
	childIdx uint64 // directories: first child's index
	digest   [32]byte
}

func v5Hash(digester string, b []byte) [32]byte {
	if digester == DigestSHA256 {
		return sha256.Sum256(b)
	}
	return blake3.Sum256(b)
}

// v5Records numbers the tree's names: a directory's children take
// consecutive indexes in name order, then each child directory is numbered
// in turn, depth first. It also returns each inode's first index (hard
// links share the inode number) and fills in the Merkle digests.
func v5Records(root *inode, digester string) ([]*v5Rec, map[*inode]uint64) {
	recs := []*v5Rec{{name: "/", ino: root, index: 1}}
	var number func(r *v5Rec)
	number = func(r *v5Rec) {
		r.childIdx = uint64(len(recs) + 1)
		var dirs []*v5Rec
		for _, c := range r.ino.Children {
			cr := &v5Rec{name: c.Name, ino: c.Ino, parent: r.index, index: uint64(len(recs) + 1)}
			recs = append(recs, cr)
			if c.Ino.isDir() {
				dirs = append(dirs, cr)
			}
		}
		for _, d := range dirs {
			number(d)
		}
	}
	number(recs[0])
	firstIndex := map[*inode]uint64{}
	for _, r := range recs {
		if _, ok := firstIndex[r.ino]; !ok {
			firstIndex[r.ino] = r.index
		}
	}
	// Merkle digests, children before parents.
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		var buf []byte
		switch {
		case r.ino.isReg():
			for _, c := range r.ino.Chunks {
				buf = append(buf, c.Digest[:]...)
			}
		case r.ino.isLnk():
			buf = []byte(r.ino.Target)
		case r.ino.isDir():
			for k := range r.ino.Children {
				d := recs[r.childIdx-1+uint64(k)].digest
				buf = append(buf, d[:]...)
			}
		}
		r.digest = v5Hash(digester, buf)
	}
	return recs, firstIndex
}

// writeV5 lays out and encodes a RAFS v5 bootstrap.
func writeV5(img *image, digester string) ([]byte, error) {
	recs, firstIndex := v5Records(img.root, digester)
	sb := layout.SuperBlockV5{Magic: layout.V5Magic, Version: layout.V5Version, SuperSize: layout.V5SuperSize,
		ChunkSize: img.chunkSize, Flags: img.flags, InodesCount: uint64(len(firstIndex)),
		InodeTableOffset: layout.V5SuperSize, InodeTableEntries: uint32(len(recs)),
		PrefetchTableEntries: uint32(len(img.prefetch)), ExtBlobTableEntries: uint32(len(img.blobs))}
	sb.PrefetchTableOffset = sb.InodeTableOffset + align(uint64(4*len(recs)), 8)
	sb.BlobTableOffset = sb.PrefetchTableOffset + align(uint64(4*len(img.prefetch)), 8)
	ids := make([]string, len(img.blobs))
	for i, b := range img.blobs {
		ids[i] = b.ID
	}
	blobTable := layout.AppendBlobTableV5(nil, ids)
	sb.BlobTableSize = uint32(align(uint64(len(blobTable)), 8))
	sb.ExtBlobTableOffset = sb.BlobTableOffset + uint64(sb.BlobTableSize)
	// Records follow the tables; each is placed before any is written.
	off := sb.ExtBlobTableOffset + uint64(layout.V5ExtBlobSize*len(img.blobs))
	type placed struct {
		off   uint64
		xattr []byte
	}
	pl := make([]placed, len(recs))
	for i, r := range recs {
		pl[i].off = off
		pl[i].xattr = v5Xattrs(r.ino.Xattrs)
		off += layout.V5InodeSize + align(uint64(len(r.name)), 8) + align(uint64(len(r.ino.Target)), 8) +
			uint64(len(pl[i].xattr))
		if r.ino.isReg() {
			off += uint64(layout.ChunkInfoV5Size * len(r.ino.Chunks))
		}
	}
	if off > layout.V5MaxBootstrap {
		return nil, fmt.Errorf("RAFS v5 bootstrap would be %d bytes, more than 2 GiB", off)
	}
	buf := make([]byte, off)
	sb.Encode(buf)
	for i := range recs {
		binary.LittleEndian.PutUint32(buf[sb.InodeTableOffset+uint64(4*i):], uint32(pl[i].off>>3))
	}
	layout.EncodePrefetch(buf[sb.PrefetchTableOffset:], prefetchIDs(img.prefetch, func(n *inode) uint64 { return firstIndex[n] }))
	copy(buf[sb.BlobTableOffset:], blobTable)
	for i, b := range img.blobs {
		e := layout.ExtBlobEntryV5{ChunkCount: b.ChunkCount, Features: b.Features &^ layout.BlobV5NoExtTable,
			UncompressedSize: b.UncompressedSize, CompressedSize: b.CompressedSize}
		e.Encode(buf[sb.ExtBlobTableOffset+uint64(layout.V5ExtBlobSize*i):])
	}
	for i, r := range recs {
		encodeV5Record(buf[pl[i].off:], r, firstIndex[r.ino], pl[i].xattr, img.chunkSize)
	}
	return buf, nil
}

// encodeV5Record writes one inode record: the inode, its name, symlink
// target, xattrs and chunks.
func encodeV5Record(b []byte, r *v5Rec, ino uint64, xattrs []byte, chunkSize uint32) {
	n := r.ino
	di := layout.InodeV5{Digest: r.digest, Parent: r.parent, Ino: ino, UID: n.UID, GID: n.GID, Mode: n.Mode,
		Size: n.Size, Nlink: n.nlink, NameSize: uint16(len(r.name)), SymlinkSize: uint16(len(n.Target)),
		Rdev: uint32(n.Rdev), MtimeNsec: n.MtimeNsec, Mtime: uint64(n.Mtime)}
	switch {
	case n.isDir():
		var names uint64
		for _, c := range n.Children {
			names += uint64(len(c.Name)) + 8
		}
		di.Size = max(align(names, blockSize), blockSize)
		// an empty directory still points at the next index, as nydus does
		di.ChildIndex, di.ChildCount = uint32(r.childIdx), uint32(len(n.Children))
	case n.isReg():
		di.ChildCount = uint32(len(n.Chunks))
		if n.nlink > 1 {
			di.Flags |= layout.V5InodeHardlink
		}
	case n.isLnk():
		di.Flags |= layout.V5InodeSymlink
	}
	if len(xattrs) > 0 {
		di.Flags |= layout.V5InodeXattr
	}
	di.Blocks = (di.Size + 511) / 512
	di.Encode(b)
	copy(b[layout.V5InodeSize:], r.name)
	p := di.XattrsOffset()
	copy(b[layout.V5InodeSize+align(uint64(len(r.name)), 8):], n.Target)
	copy(b[p:], xattrs)
	p += uint64(len(xattrs))
	if n.isReg() {
		for k, c := range n.Chunks {
			encodeChunkInfo(b[p+uint64(k*layout.ChunkInfoV5Size):], c, uint64(k)*uint64(chunkSize))
		}
	}
}

// v5Xattrs encodes the v5 xattr block: u64 size, then (u32 len, name, NUL,
// value) pairs, padded to 8.
func v5Xattrs(xs []xattr) []byte {
	if len(xs) == 0 {
		return nil
	}
	sorted := append([]xattr(nil), xs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	var pairs []byte
	for _, x := range sorted {
		pairs = binary.LittleEndian.AppendUint32(pairs, uint32(len(x.Name)+1+len(x.Value)))
		pairs = append(pairs, x.Name...)
		pairs = append(pairs, 0)
		pairs = append(pairs, x.Value...)
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(pairs)))
	out = append(out, pairs...)
	for len(out)%8 != 0 {
		out = append(out, 0)
	}
	return out
}
