#include "textflag.h"

// func int80(trap uintptr) uintptr
// Makes a system call through the 32-bit ABI (int 0x80), which the persona's seccomp filter
// must answer by killing the process.
TEXT ·int80(SB),NOSPLIT,$0-16
	MOVQ trap+0(FP), AX
	INT $0x80
	MOVQ AX, ret+8(FP)
	RET
