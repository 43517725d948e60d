//go:build amd64 || arm64

package virtqueue

// fullFence orders every earlier load and store before every later one
// (virtio_mb): a store to the ring followed by a load of the guest's
// suppression field needs it.
//
//go:noescape
func fullFence()

// loadFence orders earlier loads before later loads (virtio_rmb).
//
//go:noescape
func loadFence()

// storeFence orders earlier stores before later stores (virtio_wmb).
//
//go:noescape
func storeFence()
