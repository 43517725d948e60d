package virtqueue

// Chain is one descriptor chain popped from a queue's available ring.
//
// Readable holds the device-readable buffers (the request) and Writable the
// device-writable buffers (room for the reply), each in chain order. Every
// slice points straight into guest memory and has been bounds-checked by
// GuestMemory; a consumer never sees an address, only bytes.
type Chain struct {
	// Head is the index of the chain's first descriptor; it goes back to the
	// guest in the used ring.
	Head uint16
	// Readable are the device-readable buffers, in order.
	Readable [][]byte
	// Writable are the device-writable buffers, in order.
	Writable [][]byte
}

// ReadableLen returns the total size of the readable buffers.
func (c *Chain) ReadableLen() int { return BuffersLen(c.Readable) }

// WritableLen returns the total size of the writable buffers.
func (c *Chain) WritableLen() int { return BuffersLen(c.Writable) }
