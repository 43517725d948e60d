#include "textflag.h"

// func FullFence()
TEXT ·FullFence(SB), NOSPLIT, $0-0
	DMB	$0xb // ISH
	RET

// func LoadFence()
TEXT ·LoadFence(SB), NOSPLIT, $0-0
	DMB	$0x9 // ISHLD
	RET

// func StoreFence()
TEXT ·StoreFence(SB), NOSPLIT, $0-0
	DMB	$0xa // ISHST
	RET
