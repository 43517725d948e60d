#include "textflag.h"

// func fullFence()
TEXT ·fullFence(SB), NOSPLIT, $0-0
	MFENCE
	RET

// func loadFence()
// x86 does not reorder loads with older loads; the call itself stops the
// compiler from moving accesses across it.
TEXT ·loadFence(SB), NOSPLIT, $0-0
	RET

// func storeFence()
// x86 does not reorder stores with older stores.
TEXT ·storeFence(SB), NOSPLIT, $0-0
	RET
