#include "textflag.h"

// func FullFence()
TEXT ·FullFence(SB), NOSPLIT, $0-0
	MFENCE
	RET

// func LoadFence()
// x86 does not reorder loads with older loads; the call itself stops the
// compiler from moving accesses across it.
TEXT ·LoadFence(SB), NOSPLIT, $0-0
	RET

// func StoreFence()
// x86 does not reorder stores with older stores.
TEXT ·StoreFence(SB), NOSPLIT, $0-0
	RET
