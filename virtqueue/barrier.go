package virtqueue

// Exported barriers and single-access index helpers, for frontend-side code
// that plays the guest driver (testdriver). The device side uses the same
// primitives internally.

// LoadIdx reads the little-endian u16 ring field at b[off] in one access.
func LoadIdx(b []byte, off int) uint16 { return load16(b, off) }

// StoreIdx writes the little-endian u16 ring field at b[off] in one access.
func StoreIdx(b []byte, off int, v uint16) { store16(b, off, v) }

// FullFence is virtio_mb: earlier loads and stores before later ones.
func FullFence() { fullFence() }

// LoadFence is virtio_rmb: earlier loads before later loads.
func LoadFence() { loadFence() }

// StoreFence is virtio_wmb: earlier stores before later stores.
func StoreFence() { storeFence() }

// NeedEvent is vring_need_event: whether moving an index from old to new
// crosses the event index ev the other side published.
func NeedEvent(ev, new, old uint16) bool { return needEvent(ev, new, old) }
