package layout

// Most structures are described once, as a table of fields (offset, width
// on disk, and the Go field it maps to), which both Decode and Encode walk:
// an offset is written in one place. The structures the reader decodes on
// every FUSE operation (v6 inodes, dirents, chunk indexes, chunk-info
// entries) are coded directly instead, to keep that path free of the
// table walk.

// field is one member of an on-disk structure.
type field struct {
	off, width int
	p          any // *uint8/16/32/64, *Compression, *DigestAlgo: an integer; *[32]byte, *string: bytes
}

// fieldBuf holds a structure's field table on the caller's stack.
type fieldBuf [20]field

func (f *fieldBuf) of(fs ...field) []field { return f[:copy(f[:], fs)] }

func u8(off int, p *uint8) field         { return field{off, 1, p} }
func u16(off int, p *uint16) field       { return field{off, 2, p} }
func u32(off int, p *uint32) field       { return field{off, 4, p} }
func u64(off int, p *uint64) field       { return field{off, 8, p} }
func comp(off int, p *Compression) field { return field{off, 4, p} }
func dig(off int, p *DigestAlgo) field   { return field{off, 4, p} }
func sha(off int, p *[32]byte) field     { return field{off, 32, p} }

// str is a NUL-padded string of width bytes.
func str(off, width int, p *string) field { return field{off, width, p} }

func decodeFields(b []byte, fs []field) {
	for _, f := range fs {
		b := b[f.off : f.off+f.width]
		switch p := f.p.(type) {
		case *uint8:
			*p = b[0]
		case *uint16:
			*p = le.Uint16(b)
		case *uint32:
			*p = le.Uint32(b)
		case *uint64:
			*p = le.Uint64(b)
		case *Compression:
			*p = Compression(le.Uint32(b))
		case *DigestAlgo:
			*p = DigestAlgo(le.Uint32(b))
		case *[32]byte:
			copy(p[:], b)
		case *string:
			*p = CString(b)
		}
	}
}

func encodeFields(b []byte, fs []field) {
	for _, f := range fs {
		b := b[f.off : f.off+f.width]
		switch p := f.p.(type) {
		case *uint8:
			b[0] = *p
		case *uint16:
			le.PutUint16(b, *p)
		case *uint32:
			le.PutUint32(b, *p)
		case *uint64:
			le.PutUint64(b, *p)
		case *Compression:
			le.PutUint32(b, uint32(*p))
		case *DigestAlgo:
			le.PutUint32(b, uint32(*p))
		case *[32]byte:
			copy(b, p[:])
		case *string:
			copy(b, *p)
		}
	}
}
