package testdriver

import (
	"context"

	"github.com/nydus-virtiofsd/nydus-virtiofsd/virtqueue"
)

// ChainHandler is what the daemon's device offers the transport.
type ChainHandler interface {
	HandleChain(ctx context.Context, queue int, c *virtqueue.Chain) uint32
}

// Direct returns a send function (fuseclient.SendFunc's shape) that hands
// each request straight to dev on queue as one chain, with fresh writable
// buffers of the given sizes, and returns the bytes written: a device test
// without rings, sockets or guest memory.
func Direct(dev ChainHandler, queue int) func(readable [][]byte, sizes []int) ([]byte, error) {
	return func(readable [][]byte, sizes []int) ([]byte, error) {
		var w [][]byte
		for _, n := range sizes {
			w = append(w, make([]byte, n))
		}
		n := dev.HandleChain(context.Background(), queue, &virtqueue.Chain{Readable: readable, Writable: w})
		var out []byte
		for _, b := range w {
			out = append(out, b...)
		}
		return out[:min(int(n), len(out))], nil
	}
}
