//go:build linux

package prog

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// seccompSetModeFilter is SECCOMP_SET_MODE_FILTER and seccompFilterFlagLog is
// SECCOMP_FILTER_FLAG_LOG (linux/seccomp.h).
const (
	seccompSetModeFilter = 1
	seccompFilterFlagLog = 2
)

// Install attaches p to the calling thread; it is inherited across execve and by every child.
// The filter is installed with SECCOMP_FILTER_FLAG_LOG, so that the kernel logs each call it
// refuses (for the actions kernel.seccomp.actions_logged names; see EnableLogging).
//
// Precondition: the thread is locked (runtime.LockOSThread) and will be the one that execs;
// no_new_privs is set, or the thread has CAP_SYS_ADMIN.
func Install(p Program) error {
	if len(p) == 0 || len(p) > MaxInstructions {
		return fmt.Errorf("install seccomp filter of %d instructions: out of range", len(p))
	}
	prog := unix.SockFprog{Len: uint16(len(p)), Filter: &p[0]}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, seccompSetModeFilter, seccompFilterFlagLog, uintptr(unsafe.Pointer(&prog))); errno != 0 {
		return fmt.Errorf("install seccomp filter: %w", errno)
	}
	return nil
}
