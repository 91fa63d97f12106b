//go:build linux

package seccomp

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// seccompSetModeFilter is SECCOMP_SET_MODE_FILTER (linux/seccomp.h).
const seccompSetModeFilter = 1

// Install attaches p to the calling thread; it is inherited across execve and by every child.
//
// Precondition: the thread is locked (runtime.LockOSThread) and will be the one that execs;
// no_new_privs is set, or the thread has CAP_SYS_ADMIN.
func Install(p Program) error {
	if len(p) == 0 || len(p) > MaxInstructions {
		return fmt.Errorf("install seccomp filter of %d instructions: out of range", len(p))
	}
	prog := unix.SockFprog{Len: uint16(len(p)), Filter: &p[0]}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, seccompSetModeFilter, 0, uintptr(unsafe.Pointer(&prog))); errno != 0 {
		return fmt.Errorf("install seccomp filter: %w", errno)
	}
	return nil
}
