package builder

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sort"

	"lukechampine.com/blake3"
)

// RAFS v5 constants (rafs-format.md §2).
const (
	rafsV5Magic      = 0x52414653
	rafsV5Version    = 0x500
	rafsV5SBSize     = 8192
	v5InodeSize      = 128
	v5ExtBlobSize    = 64
	v5FlagSymlink    = 0x1
	v5FlagHardlink   = 0x2
	v5FlagXattr      = 0x4
	v5MaxBootstrapSz = 0x8000_0000
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

// writeV5 lays out and encodes a RAFS v5 bootstrap.
func writeV5(img *image, digester string) ([]byte, error) {
	// Indexes: a directory's children take consecutive indexes in name
	// order, then each child directory is numbered in turn, depth first.
	recs := []*v5Rec{{name: "/", ino: img.root, index: 1}}
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

	le := binary.LittleEndian
	inodeTableOff := uint64(rafsV5SBSize)
	prefetchOff := inodeTableOff + align(uint64(4*len(recs)), 8)
	blobTableOff := prefetchOff + align(uint64(4*len(img.prefetch)), 8)
	var blobTable []byte
	for i, b := range img.blobs {
		blobTable = append(blobTable, make([]byte, 8)...)
		blobTable = append(blobTable, b.ID...)
		if i != len(img.blobs)-1 {
			blobTable = append(blobTable, 0)
		}
	}
	blobTableSize := align(uint64(len(blobTable)), 8)
	extOff := blobTableOff + blobTableSize
	off := extOff + uint64(v5ExtBlobSize*len(img.blobs))
	// record sizes
	type placed struct {
		off   uint64
		xattr []byte
	}
	pl := make([]placed, len(recs))
	for i, r := range recs {
		pl[i].off = off
		pl[i].xattr = v5Xattrs(r.ino.Xattrs)
		off += v5InodeSize + align(uint64(len(r.name)), 8) + align(uint64(len(r.ino.Target)), 8) +
			uint64(len(pl[i].xattr))
		if r.ino.isReg() {
			off += uint64(v6ChunkInfoSize * len(r.ino.Chunks))
		}
	}
	if off > v5MaxBootstrapSz {
		return nil, fmt.Errorf("RAFS v5 bootstrap would be %d bytes, more than 2 GiB", off)
	}
	buf := make([]byte, off)
	le.PutUint32(buf[0:], rafsV5Magic)
	le.PutUint32(buf[4:], rafsV5Version)
	le.PutUint32(buf[8:], rafsV5SBSize)
	le.PutUint32(buf[12:], img.chunkSize)
	le.PutUint64(buf[16:], img.flags)
	le.PutUint64(buf[24:], uint64(len(firstIndex)))
	le.PutUint64(buf[32:], inodeTableOff)
	le.PutUint64(buf[40:], prefetchOff)
	le.PutUint64(buf[48:], blobTableOff)
	le.PutUint32(buf[56:], uint32(len(recs)))
	le.PutUint32(buf[60:], uint32(len(img.prefetch)))
	le.PutUint32(buf[64:], uint32(blobTableSize))
	le.PutUint32(buf[68:], uint32(len(img.blobs)))
	le.PutUint64(buf[72:], extOff)
	for i := range recs {
		le.PutUint32(buf[inodeTableOff+uint64(4*i):], uint32(pl[i].off>>3))
	}
	for i, n := range img.prefetch {
		le.PutUint32(buf[prefetchOff+uint64(4*i):], uint32(firstIndex[n]))
	}
	copy(buf[blobTableOff:], blobTable)
	for i, b := range img.blobs {
		e := buf[extOff+uint64(v5ExtBlobSize*i):]
		le.PutUint32(e[0:], b.ChunkCount)
		le.PutUint32(e[4:], b.Features&^blobFeatV5NoExtTable)
		le.PutUint64(e[8:], b.UncompressedSize)
		le.PutUint64(e[16:], b.CompressedSize)
	}
	for i, r := range recs {
		n := r.ino
		o := pl[i].off
		in := buf[o:]
		copy(in[0:32], r.digest[:])
		le.PutUint64(in[32:], r.parent)
		le.PutUint64(in[40:], firstIndex[n])
		le.PutUint32(in[48:], n.UID)
		le.PutUint32(in[52:], n.GID)
		le.PutUint32(in[60:], n.Mode)
		size := n.Size
		var flags uint64
		var childIdx, childCnt uint32
		switch {
		case n.isDir():
			var names uint64
			for _, c := range n.Children {
				names += uint64(len(c.Name)) + 8
			}
			size = max(align(names, blockSize), blockSize)
			// an empty directory still points at the next index, as nydus does
			childIdx, childCnt = uint32(r.childIdx), uint32(len(n.Children))
		case n.isReg():
			childCnt = uint32(len(n.Chunks))
			if n.nlink > 1 {
				flags |= v5FlagHardlink
			}
		case n.isLnk():
			flags |= v5FlagSymlink
		}
		if len(pl[i].xattr) > 0 {
			flags |= v5FlagXattr
		}
		le.PutUint64(in[64:], size)
		le.PutUint64(in[72:], (size+511)/512)
		le.PutUint64(in[80:], flags)
		le.PutUint32(in[88:], n.nlink)
		le.PutUint32(in[92:], childIdx)
		le.PutUint32(in[96:], childCnt)
		le.PutUint16(in[100:], uint16(len(r.name)))
		le.PutUint16(in[102:], uint16(len(n.Target)))
		le.PutUint32(in[104:], uint32(n.Rdev))
		le.PutUint32(in[108:], n.MtimeNsec)
		le.PutUint64(in[112:], uint64(n.Mtime))
		p := o + v5InodeSize
		copy(buf[p:], r.name)
		p += align(uint64(len(r.name)), 8)
		copy(buf[p:], n.Target)
		p += align(uint64(len(n.Target)), 8)
		copy(buf[p:], pl[i].xattr)
		p += uint64(len(pl[i].xattr))
		if n.isReg() {
			for k, c := range n.Chunks {
				encodeChunkInfo(buf[p+uint64(k*v6ChunkInfoSize):], c, uint64(k)*uint64(img.chunkSize))
			}
		}
	}
	return buf, nil
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
