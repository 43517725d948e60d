//go:build !amd64 && !arm64

package virtqueue

import "sync/atomic"

// fenceWord is only ever touched by sequentially consistent atomic
// operations, which Go implements with full barriers on the remaining
// architectures (sync on ppc64, serialising instructions on s390x, fence
// on riscv64).
var fenceWord atomic.Uint32

func fullFence()  { fenceWord.Add(1) }
func loadFence()  { fenceWord.Load() }
func storeFence() { fenceWord.Store(0) }
