package ring

import (
	"math/bits"
	"unsafe"
)

// Ring fields are little-endian (virtio 1.0). The idx fields are read and
// written with single 16-bit accesses through unsafe pointers, so they are
// never torn, then swapped on big-endian hosts.

func hostIsLE() bool {
	var x uint16 = 1
	return *(*byte)(unsafe.Pointer(&x)) == 1
}

// Load16 reads the little-endian u16 at b[off] with one access. b[off:off+2]
// must be in bounds and off even.
func Load16(b []byte, off int) uint16 {
	_ = b[off+1]
	v := *(*uint16)(unsafe.Pointer(&b[off]))
	if !hostIsLE() {
		v = bits.ReverseBytes16(v)
	}
	return v
}

// Store16 writes v little-endian at b[off] with one access.
func Store16(b []byte, off int, v uint16) {
	_ = b[off+1]
	if !hostIsLE() {
		v = bits.ReverseBytes16(v)
	}
	*(*uint16)(unsafe.Pointer(&b[off])) = v
}

// NeedEvent is vring_need_event: whether moving an index from old to new
// crosses the event index ev that the other side published.
func NeedEvent(ev, new, old uint16) bool {
	return new-ev-1 < new-old
}
