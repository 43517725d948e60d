//go:build !amd64 && !arm64

package ring

import "sync/atomic"

// fenceWord is only ever touched by sequentially consistent atomic
// operations, which Go implements with full barriers on the remaining
// architectures (sync on ppc64, serialising instructions on s390x, fence
// on riscv64).
var fenceWord atomic.Uint32

func FullFence()  { fenceWord.Add(1) }
func LoadFence()  { fenceWord.Load() }
func StoreFence() { fenceWord.Store(0) }
