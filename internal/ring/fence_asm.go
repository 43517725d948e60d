//go:build amd64 || arm64

package ring

// FullFence orders every earlier load and store before every later one
// (virtio_mb): a store to the ring followed by a load of the guest's
// suppression field needs it.
//
//go:noescape
func FullFence()

// LoadFence orders earlier loads before later loads (virtio_rmb).
//
//go:noescape
func LoadFence()

// StoreFence orders earlier stores before later stores (virtio_wmb).
//
//go:noescape
func StoreFence()
