package vm

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// sysProcAttr puts QEMU in its own process group, so terminal signals meant for the caller
// never reach it and one kill(2) reaches everything it started, and asks the kernel to
// SIGKILL it if the thread that started it dies (prctl(2) PR_SET_PDEATHSIG), so a crashed
// or timed-out test binary leaves no QEMU behind. Go never retires an ordinary goroutine's
// thread, so the death signal fires only when the whole process goes.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// killGroup sends SIGKILL to the process group led by pid.
// Precondition: pid is not reaped yet, so the group id cannot have been reused.
func killGroup(pid int) error {
	err := unix.Kill(-pid, unix.SIGKILL)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// waitExit blocks until pid has exited but leaves it a zombie (waitid(2) WNOWAIT), so its
// process group id stays reserved until exec reaps it.
func waitExit(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return err
		}
	}
}
