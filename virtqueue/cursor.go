package virtqueue

import (
	"math/bits"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// iovMax is the most iovecs one preadv takes (IOV_MAX).
const iovMax = 1024

// Cursor walks a scatter list ([][]byte, typically a Chain's Readable or
// Writable buffers in guest memory) as one byte stream: read or write a
// run of bytes or an object at the current position, split off the next n
// bytes as a cursor of their own, or fill the next bytes straight from a
// file with preadv. Every operation advances past what it consumed and is
// clipped to what remains, so a short guest buffer can never be overrun.
//
// A Cursor is a value: copying it gives an independent position over the
// same buffers. It allocates nothing once its iovec scratch space (kept
// across Reset) has grown to the largest chain seen.
//
// The guest may change its buffers at any time, so a consumer parses only
// what it has copied out (CopyOut, ReadObj), never the buffers themselves.
type Cursor struct {
	// bufs[0][off:] is the next byte; n bytes remain (possibly fewer than
	// the buffers hold, after Split).
	bufs [][]byte
	off  int
	n    int
	// iovecs is scratch space for FillFromFile, shared with the cursors
	// Split off this one (use one of them at a time).
	iovecs []unix.Iovec
}

// BuffersLen returns the total length of bufs.
func BuffersLen(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}

// NewCursor returns a cursor at the start of bufs.
func NewCursor(bufs [][]byte) Cursor {
	return Cursor{bufs: bufs, n: BuffersLen(bufs)}
}

// Reset moves c to the start of bufs, keeping its scratch space.
func (c *Cursor) Reset(bufs [][]byte) {
	*c = Cursor{bufs: bufs, n: BuffersLen(bufs), iovecs: c.iovecs[:0]}
}

// Clear drops every reference to the buffers (guest memory), keeping the
// scratch space.
func (c *Cursor) Clear() {
	clear(c.iovecs[:cap(c.iovecs)])
	*c = Cursor{iovecs: c.iovecs[:0]}
}

// Assign moves c to o's position and limit, keeping c's own scratch space
// (so that a cursor kept across requests stops allocating).
func (c *Cursor) Assign(o Cursor) {
	o.iovecs = c.iovecs[:0]
	*c = o
}

// Len returns the number of bytes left.
func (c *Cursor) Len() int { return c.n }

// next returns the next contiguous run (at most the bytes left), or nil.
func (c *Cursor) next() []byte {
	for c.n > 0 && len(c.bufs) > 0 {
		if b := c.bufs[0][c.off:]; len(b) > 0 {
			return b[:min(len(b), c.n)]
		}
		c.bufs, c.off = c.bufs[1:], 0
	}
	return nil
}

// Skip advances by up to n bytes and returns how many it skipped.
func (c *Cursor) Skip(n int) int {
	n = min(max(n, 0), c.n)
	for left := n; left > 0; {
		b := c.next()
		k := min(len(b), left)
		c.off += k
		c.n -= k
		left -= k
	}
	return n
}

// CopyOut copies the next bytes into p and returns how many it copied
// (fewer than len(p) only when the cursor runs out).
func (c *Cursor) CopyOut(p []byte) int {
	done := 0
	for done < len(p) {
		b := c.next()
		if b == nil {
			break
		}
		k := copy(p[done:], b)
		done += k
		c.off += k
		c.n -= k
	}
	return done
}

// CopyIn copies the sources in order into the next bytes and returns how
// many it copied (fewer than their total only when the cursor runs out).
func (c *Cursor) CopyIn(srcs ...[]byte) int {
	done := 0
	for _, p := range srcs {
		for len(p) > 0 {
			b := c.next()
			if b == nil {
				return done
			}
			k := copy(b, p)
			p = p[k:]
			done += k
			c.off += k
			c.n -= k
		}
	}
	return done
}

// ReadObj copies the next sizeof(T) bytes into *v (T must be plain data:
// no pointers) and reports whether they were all there.
func ReadObj[T any](c *Cursor, v *T) bool {
	p := unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
	return c.CopyOut(p) == len(p)
}

// WriteObj copies *v (plain data) into the next bytes and reports whether
// it all fit.
func WriteObj[T any](c *Cursor, v *T) bool {
	p := unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
	return c.CopyIn(p) == len(p)
}

// Split returns a cursor over the next n bytes (fewer if fewer are left)
// and advances c past them.
func (c *Cursor) Split(n int) Cursor {
	head := *c
	head.n = c.Skip(n)
	return head
}

// Contiguous returns the next n bytes when they lie in one buffer, without
// advancing.
func (c *Cursor) Contiguous(n int) ([]byte, bool) {
	if n > c.n {
		return nil, false
	}
	b := c.next()
	if len(b) < n {
		return nil, false
	}
	return b[:n], true
}

// Buffers appends the remaining bytes, as slices of the buffers, to dst.
func (c *Cursor) Buffers(dst [][]byte) [][]byte {
	d := *c
	for b := d.next(); b != nil; b = d.next() {
		dst = append(dst, b)
		d.off += len(b)
		d.n -= len(b)
	}
	return dst
}

// FillFromFile reads up to n bytes of fd at off straight into the next
// bytes with preadv (no copy through the heap), retrying short reads and
// EINTR, and advances past what it read. It returns fewer than n bytes at
// end of file, and the bytes read before an error along with the error.
func (c *Cursor) FillFromFile(fd int, off int64, n int) (int, error) {
	n = min(max(n, 0), c.n)
	got := 0
	for got < n {
		k, err := c.preadv(fd, off+int64(got), n-got)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return got, err
		}
		if k == 0 {
			break
		}
		c.Skip(k)
		got += k
	}
	return got, nil
}

// preadv reads into the next n bytes (at most iovMax buffers) without
// advancing.
func (c *Cursor) preadv(fd int, off int64, n int) (int, error) {
	c.iovecs = c.iovecs[:0]
	d := *c
	d.n = n
	for b := d.next(); b != nil && len(c.iovecs) < iovMax; b = d.next() {
		v := unix.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		c.iovecs = append(c.iovecs, v)
		d.off += len(b)
		d.n -= len(b)
	}
	if len(c.iovecs) == 0 {
		return 0, nil
	}
	// preadv(fd, iov, iovcnt, pos_l, pos_h): pos_h is 0 on 64-bit.
	hi := uintptr(uint64(off) >> (bits.UintSize - 1) >> 1)
	k, _, e := unix.Syscall6(unix.SYS_PREADV, uintptr(fd), uintptr(unsafe.Pointer(&c.iovecs[0])),
		uintptr(len(c.iovecs)), uintptr(off), hi, 0)
	runtime.KeepAlive(c.bufs)
	if e != 0 {
		return 0, e
	}
	return int(k), nil
}
