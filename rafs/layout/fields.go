package layout

// Most structures are described once, by a fields method that names each
// member with its offset and width; Decode and Encode both run it, with a
// codec that reads the bytes into the fields or writes the fields into the
// bytes. An offset is thus written in one place, and nothing escapes to
// the heap (the codec only dereferences the pointers it is given).

// codec reads (enc false) or writes (enc true) the fields of one structure
// at the start of b.
type codec struct {
	b   []byte
	enc bool
}

func (c *codec) u8(off int, p *uint8) {
	if c.enc {
		c.b[off] = *p
	} else {
		*p = c.b[off]
	}
}

func (c *codec) u16(off int, p *uint16) {
	if c.enc {
		le.PutUint16(c.b[off:], *p)
	} else {
		*p = le.Uint16(c.b[off:])
	}
}

func (c *codec) u32(off int, p *uint32) {
	if c.enc {
		le.PutUint32(c.b[off:], *p)
	} else {
		*p = le.Uint32(c.b[off:])
	}
}

func (c *codec) u64(off int, p *uint64) {
	if c.enc {
		le.PutUint64(c.b[off:], *p)
	} else {
		*p = le.Uint64(c.b[off:])
	}
}

func (c *codec) comp(off int, p *Compression) { c.u32(off, (*uint32)(p)) }
func (c *codec) dig(off int, p *DigestAlgo)   { c.u32(off, (*uint32)(p)) }

func (c *codec) sha(off int, p *[32]byte) {
	if c.enc {
		copy(c.b[off:off+32], p[:])
	} else {
		copy(p[:], c.b[off:off+32])
	}
}

// str is a NUL-padded string of width bytes (a longer one is cut).
func (c *codec) str(off, width int, p *string) {
	if c.enc {
		copy(c.b[off:off+width], *p)
	} else {
		*p = CString(c.b[off : off+width])
	}
}

// u16as32 and u32as64 are narrower on disk than in Go (compact inodes).
func (c *codec) u16as32(off int, p *uint32) {
	v := uint16(*p)
	c.u16(off, &v)
	*p = uint32(v)
}

func (c *codec) u32as64(off int, p *uint64) {
	v := uint32(*p)
	c.u32(off, &v)
	*p = uint64(v)
}
