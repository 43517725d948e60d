#include "textflag.h"

// func fullFence()
TEXT ·fullFence(SB), NOSPLIT, $0-0
	DMB	$0xb // ISH
	RET

// func loadFence()
TEXT ·loadFence(SB), NOSPLIT, $0-0
	DMB	$0x9 // ISHLD
	RET

// func storeFence()
TEXT ·storeFence(SB), NOSPLIT, $0-0
	DMB	$0xa // ISHST
	RET
