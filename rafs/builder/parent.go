package builder

import (
	"encoding/binary"
	"fmt"
	"os"
)

// parentImage is what a layered build takes from the layer below.
type parentImage struct {
	root      *inode
	blobs     []blobInfo
	chunks    map[[32]byte]chunkRef // for dedup
	chunkSize uint32
	flags     uint64
}

// loadParent reads a RAFS v6 bootstrap (ours or nydus-image's) into a tree.
// It is a small decoder of its own because the builder needs the raw blob
// table entries and every file's chunk list, which a reader for serving
// files has no reason to expose.
func loadParent(p string) (*parentImage, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("parent bootstrap: %w", err)
	}
	pi, err := decodeParent(b)
	if err != nil {
		return nil, fmt.Errorf("parent bootstrap %s: %w", p, err)
	}
	return pi, nil
}

type parentDecoder struct {
	b        []byte
	metaBase uint64
	chunkSz  uint64
	byCI     map[[2]uint32]chunkRef
	seen     map[uint64]*inode
	depth    int
}

func (d *parentDecoder) need(off, n uint64) ([]byte, error) {
	if off > uint64(len(d.b)) || n > uint64(len(d.b))-off {
		return nil, fmt.Errorf("range [%d,+%d) outside the bootstrap", off, n)
	}
	return d.b[off : off+n], nil
}

func decodeParent(b []byte) (*parentImage, error) {
	le := binary.LittleEndian
	if len(b) < 4096 || le.Uint32(b[1024:]) != erofsMagic {
		if len(b) >= 8 && le.Uint32(b) == 0x52414653 {
			return nil, fmt.Errorf("RAFS v5 parents are not supported")
		}
		return nil, fmt.Errorf("not a RAFS v6 bootstrap")
	}
	sb, ext := b[1024:], b[1152:]
	if le.Uint32(sb[8:])&rafsV6CompatBit == 0 || sb[12] != 12 {
		return nil, fmt.Errorf("not a RAFS v6 bootstrap with 4 KiB blocks")
	}
	d := &parentDecoder{b: b, metaBase: uint64(le.Uint32(sb[40:])) * blockSize,
		chunkSz: uint64(le.Uint32(ext[20:])), byCI: map[[2]uint32]chunkRef{}, seen: map[uint64]*inode{}}
	if d.chunkSz < 4096 || d.chunkSz&(d.chunkSz-1) != 0 {
		return nil, fmt.Errorf("bad chunk size %#x", d.chunkSz)
	}
	pi := &parentImage{chunkSize: uint32(d.chunkSz), flags: le.Uint64(ext[0:]), chunks: map[[32]byte]chunkRef{}}
	bt, err := d.need(le.Uint64(ext[8:]), uint64(le.Uint32(ext[16:])))
	if err != nil {
		return nil, fmt.Errorf("blob table: %w", err)
	}
	for i := 0; i+v6BlobEntrySize <= len(bt); i += v6BlobEntrySize {
		e := bt[i : i+v6BlobEntrySize]
		pi.blobs = append(pi.blobs, blobInfo{ID: string(e[:64]), UncompressedSize: le.Uint64(e[96:]),
			Raw: append([]byte(nil), e...)})
	}
	ct, err := d.need(le.Uint64(ext[24:]), le.Uint64(ext[32:]))
	if err != nil {
		return nil, fmt.Errorf("chunk table: %w", err)
	}
	for i := 0; i+v6ChunkInfoSize <= len(ct); i += v6ChunkInfoSize {
		e := ct[i : i+v6ChunkInfoSize]
		var c chunkRef
		copy(c.Digest[:], e[:32])
		c.BlobIndex = le.Uint32(e[32:])
		c.Compressed = le.Uint32(e[36:])&1 != 0
		c.CSize, c.USize = le.Uint32(e[40:]), le.Uint32(e[44:])
		c.COff, c.UOff = le.Uint64(e[48:]), le.Uint64(e[56:])
		c.CI = le.Uint32(e[72:])
		if int(c.BlobIndex) >= len(pi.blobs) {
			return nil, fmt.Errorf("chunk table entry %d: blob %d out of range", i/v6ChunkInfoSize, c.BlobIndex)
		}
		d.byCI[[2]uint32{c.BlobIndex, c.CI}] = c
		pi.chunks[c.Digest] = c
	}
	root, err := d.inode(uint64(le.Uint16(sb[14:])), "/")
	if err != nil {
		return nil, err
	}
	if !root.isDir() {
		return nil, fmt.Errorf("root is not a directory")
	}
	pi.root = root
	return pi, nil
}

// inode decodes the inode at nid (and, for directories, its subtree).
func (d *parentDecoder) inode(nid uint64, p string) (*inode, error) {
	if n, ok := d.seen[nid]; ok {
		if n.isDir() {
			return nil, fmt.Errorf("%s: directory reached twice", p)
		}
		return n, nil
	}
	le := binary.LittleEndian
	off := d.metaBase + nid*32
	raw, err := d.need(off, 32)
	if err != nil {
		return nil, fmt.Errorf("%s: inode %d: %w", p, nid, err)
	}
	n := &inode{}
	format := le.Uint16(raw)
	layout := int(format>>1) & 7
	xcount := uint64(le.Uint16(raw[2:]))
	isize := uint64(32)
	var iu uint32
	if format&1 != 0 {
		if raw, err = d.need(off, inodeExtSize); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		isize = inodeExtSize
		n.Mode = uint32(le.Uint16(raw[4:]))
		n.Size = le.Uint64(raw[8:])
		iu = le.Uint32(raw[16:])
		n.UID, n.GID = le.Uint32(raw[24:]), le.Uint32(raw[28:])
		n.Mtime, n.MtimeNsec = int64(le.Uint64(raw[32:])), le.Uint32(raw[40:])
	} else {
		n.Mode = uint32(le.Uint16(raw[4:]))
		n.Size = uint64(le.Uint32(raw[8:]))
		iu = le.Uint32(raw[16:])
		n.UID, n.GID = uint32(le.Uint16(raw[24:])), uint32(le.Uint16(raw[26:]))
	}
	d.seen[nid] = n
	xsize := uint64(0)
	if xcount > 0 {
		xsize = 12 + 4*(xcount-1)
		xb, err := d.need(off+isize, xsize)
		if err != nil {
			return nil, fmt.Errorf("%s: xattrs: %w", p, err)
		}
		if n.Xattrs, err = decodeXattrs(xb); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	// data of directories and symlinks
	body := func() ([]byte, error) {
		if n.Size > 1<<30 {
			return nil, fmt.Errorf("%s: size %d too large", p, n.Size)
		}
		switch layout {
		case layoutFlatPlain:
			return d.need(uint64(iu)*blockSize, n.Size)
		case layoutFlatInline:
			tail := n.Size % blockSize
			full := n.Size - tail
			var out []byte
			if full > 0 {
				b, err := d.need(uint64(iu)*blockSize, full)
				if err != nil {
					return nil, err
				}
				out = append(out, b...)
			}
			b, err := d.need(off+isize+xsize, tail)
			if err != nil {
				return nil, err
			}
			return append(out, b...), nil
		}
		return nil, fmt.Errorf("%s: unexpected data layout %d", p, layout)
	}
	switch n.Mode & modeTypeMask {
	case modeReg:
		if layout != layoutChunkBased {
			return nil, fmt.Errorf("%s: regular file is not chunk based", p)
		}
		cnt := (n.Size + d.chunkSz - 1) / d.chunkSz
		idx, err := d.need(align(off+isize+xsize, 8), 8*cnt)
		if err != nil {
			return nil, fmt.Errorf("%s: chunk indexes: %w", p, err)
		}
		n.Chunks = make([]chunkRef, cnt)
		for k := range n.Chunks {
			e := idx[8*k:]
			dev := le.Uint16(e[2:])
			blob := uint32(dev&0xff) - 1
			ci := uint32(dev>>8)<<16 | uint32(le.Uint16(e[0:]))
			c, ok := d.byCI[[2]uint32{blob, ci}]
			if !ok {
				return nil, fmt.Errorf("%s: chunk %d (blob %d, ci %d) not in the chunk table", p, k, blob, ci)
			}
			n.Chunks[k] = c
		}
	case modeLnk:
		t, err := body()
		if err != nil {
			return nil, fmt.Errorf("%s: symlink: %w", p, err)
		}
		n.Target = string(t)
	case modeChr, modeBlk:
		n.Rdev = uint64(iu)
	case modeDir:
		if d.depth++; d.depth > 4096 {
			return nil, fmt.Errorf("%s: tree too deep", p)
		}
		defer func() { d.depth-- }()
		data, err := body()
		if err != nil {
			return nil, fmt.Errorf("%s: directory: %w", p, err)
		}
		if err := d.dirents(n, data, p); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func (d *parentDecoder) dirents(n *inode, data []byte, p string) error {
	le := binary.LittleEndian
	for blk := 0; blk < len(data); blk += blockSize {
		end := min(blk+blockSize, len(data))
		b := data[blk:end]
		if len(b) < direntSize {
			return fmt.Errorf("%s: short dirent block", p)
		}
		cnt := int(le.Uint16(b[8:])) / direntSize
		if cnt == 0 || cnt*direntSize > len(b) {
			return fmt.Errorf("%s: bad dirent block", p)
		}
		for i := 0; i < cnt; i++ {
			e := b[i*direntSize:]
			start := int(le.Uint16(e[8:]))
			stop := len(b)
			if i+1 < cnt {
				stop = int(le.Uint16(b[(i+1)*direntSize+8:]))
			}
			if start > stop || stop > len(b) {
				return fmt.Errorf("%s: bad dirent name offsets", p)
			}
			name := string(trimNUL(b[start:stop]))
			if name == "." || name == ".." {
				continue
			}
			if name == "" || name == "/" {
				return fmt.Errorf("%s: bad dirent name %q", p, name)
			}
			cp := p + name
			if p != "/" {
				cp = p + "/" + name
			}
			c, err := d.inode(le.Uint64(e[0:]), cp)
			if err != nil {
				return err
			}
			n.Children = append(n.Children, &dentry{Name: name, Ino: c})
		}
	}
	return nil
}

func trimNUL(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

// decodeXattrs decodes an inline xattr body (no shared xattrs).
func decodeXattrs(b []byte) ([]xattr, error) {
	if b[4] != 0 {
		return nil, fmt.Errorf("shared xattrs are not supported")
	}
	var out []xattr
	for i := 12; i+4 <= len(b); {
		nl, idx, vl := int(b[i]), b[i+1], int(binary.LittleEndian.Uint16(b[i+2:]))
		if i+4+nl+vl > len(b) {
			return nil, fmt.Errorf("xattr entry overruns the inode")
		}
		var prefix string
		for _, p := range xattrPrefixes {
			if p.index == idx {
				prefix = p.prefix
			}
		}
		if prefix == "" {
			return nil, fmt.Errorf("xattr prefix index %d not supported", idx)
		}
		out = append(out, xattr{Name: prefix + string(b[i+4:i+4+nl]), Value: append([]byte(nil), b[i+4+nl:i+4+nl+vl]...)})
		i += int(align(uint64(4+nl+vl), 4))
	}
	return out, nil
}
