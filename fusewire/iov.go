package fusewire

// Helpers over scatter-gather lists ([][]byte straight into guest memory).
// The guest may change these bytes at any time, so anything that is parsed
// is first copied out, and lengths are always taken from our own copies.

// iovLen returns the total length of iov.
func iovLen(iov [][]byte) int {
	n := 0
	for _, b := range iov {
		n += len(b)
	}
	return n
}

// gather copies bytes from iov starting at off into dst and returns the
// number of bytes copied.
func gather(dst []byte, iov [][]byte, off int) int {
	n := 0
	for _, b := range iov {
		if n == len(dst) {
			break
		}
		if off >= len(b) {
			off -= len(b)
			continue
		}
		n += copy(dst[n:], b[off:])
		off = 0
	}
	return n
}

// subIov returns the buffers covering bytes [off, off+n) of iov, clipped to
// what iov holds. It appends to dst to let callers reuse storage.
func subIov(dst, iov [][]byte, off, n int) [][]byte {
	for _, b := range iov {
		if n <= 0 {
			break
		}
		if off >= len(b) {
			off -= len(b)
			continue
		}
		b = b[off:]
		off = 0
		if len(b) > n {
			b = b[:n]
		}
		n -= len(b)
		dst = append(dst, b)
	}
	return dst
}

// contiguous returns iov[off:off+n] when it lies inside one buffer.
func contiguous(iov [][]byte, off, n int) ([]byte, bool) {
	for _, b := range iov {
		if off < len(b) {
			if n <= len(b)-off {
				return b[off : off+n], true
			}
			return nil, false
		}
		off -= len(b)
	}
	return nil, false
}

// scatter copies the sources in order into iov starting at off and returns
// the number of bytes copied, which stops short when iov is full.
func scatter(iov [][]byte, off int, srcs ...[]byte) int {
	n := 0
	i := 0
	for i < len(iov) && off >= len(iov[i]) {
		off -= len(iov[i])
		i++
	}
	for _, src := range srcs {
		for len(src) > 0 && i < len(iov) {
			c := copy(iov[i][off:], src)
			src = src[c:]
			n += c
			off += c
			if off == len(iov[i]) {
				i++
				off = 0
			}
		}
	}
	return n
}
