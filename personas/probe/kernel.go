package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// kernelSurfaces is the probe's "kernel" mode: run as PID 1 of a bare machine on Spine's kernel
// (no persona, no seccomp filter, root with every capability, a full devtmpfs), it shows that
// the surfaces the kernel configuration removed are gone from the kernel itself, not merely
// filtered: the 32-bit and x32 system call entries, io_uring, userfaultfd, bpf, /dev/mem,
// /dev/port, /proc/kcore, SysRq and module loading. It prints the usual report lines, then
// powers the machine off.
func kernelSurfaces() {
	var p prober
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"}, {"devtmpfs", "/dev", "devtmpfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err == nil {
			err = unix.Mount(m.src, m.dst, m.fstype, 0, "")
			p.report("kernel: mount "+m.dst, err != nil, fmt.Sprint(err))
		}
	}
	gone := func(name string, err error) {
		p.report("kernel: no "+name, !errors.Is(err, unix.ENOSYS), fmt.Sprint(err))
	}
	// Each call gets arguments that the real system call would refuse with EINVAL or EFAULT, so
	// only a missing system call answers ENOSYS.
	gone("io_uring_setup", errno(unix.Syscall(unix.SYS_IO_URING_SETUP, 1, 0, 0)))
	gone("userfaultfd", errno(unix.Syscall(unix.SYS_USERFAULTFD, ^uintptr(0), 0, 0)))
	gone("bpf", errno(unix.Syscall(unix.SYS_BPF, ^uintptr(0), 0, 0)))
	gone("finit_module", errno(unix.Syscall(unix.SYS_FINIT_MODULE, ^uintptr(0), 0, 0)))
	gone("kexec_load", errno(unix.Syscall6(unix.SYS_KEXEC_LOAD, 0, 0, 0, 0, 0, 0)))
	gone("x32 entry", errno(unix.RawSyscall(0x40000000|unix.SYS_GETPID, 0, 0, 0)))
	// kexec_file_load is in the kernel for stage 0; once kexec_load_disabled is set, as the
	// governor does first thing, even root cannot load a kernel, and the switch cannot be
	// turned back.
	if err := os.WriteFile("/proc/sys/kernel/kexec_load_disabled", []byte("1\n"), 0); err != nil {
		p.report("kernel: kexec can be disabled", true, fmt.Sprint(err))
	} else {
		err := errno(unix.Syscall6(unix.SYS_KEXEC_FILE_LOAD, ^uintptr(0), ^uintptr(0), 0, 0, 0, 0))
		p.report("kernel: kexec_file_load refused once disabled", !errors.Is(err, unix.EPERM), fmt.Sprint(err))
		err = os.WriteFile("/proc/sys/kernel/kexec_load_disabled", []byte("0\n"), 0)
		b, _ := os.ReadFile("/proc/sys/kernel/kexec_load_disabled")
		p.report("kernel: kexec stays disabled", strings.TrimSpace(string(b)) != "1", fmt.Sprintf("%v, now %q", err, strings.TrimSpace(string(b))))
	}
	for _, path := range []string{"/dev/mem", "/dev/kmem", "/dev/port", "/proc/kcore", "/proc/sysrq-trigger", "/proc/sys/kernel/sysrq", "/proc/modules"} {
		_, err := os.Lstat(path)
		p.report("kernel: no "+path, !errors.Is(err, os.ErrNotExist), fmt.Sprint(err))
	}
	// Without the 32-bit entry, int 0x80 is a general protection fault: SIGSEGV, not a call.
	out, err := exec.Command("/proc/self/exe", "int80").CombinedOutput()
	p.report("kernel: no int 0x80 entry", !faulted(err, out), fmt.Sprintf("child ended with %v %s", err, strings.TrimSpace(string(out))))
	fmt.Printf("probe: kernel: done %d checks, %d escapes\n", p.checks, p.escapes)
	unix.Sync()
	// The raw call: the lint reserves unix.Reboot for bay0's halt path.
	_, _, e := unix.RawSyscall6(unix.SYS_REBOOT, unix.LINUX_REBOOT_MAGIC1, unix.LINUX_REBOOT_MAGIC2, unix.LINUX_REBOOT_CMD_POWER_OFF, 0, 0, 0)
	fmt.Println("probe: kernel: power off:", e)
}

// faulted reports whether a child that executed int 0x80 faulted instead of making a call:
// killed by SIGSEGV, or ended by the Go runtime, which turns the fault into its "signal
// SIGSEGV" crash and exit status 2. A child whose call returned says so and exits 0.
func faulted(err error, out []byte) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return ws.Signal() == syscall.SIGSEGV
	}
	return ws.ExitStatus() == 2 && strings.Contains(string(out), "signal SIGSEGV") && !strings.Contains(string(out), "int 0x80 returned")
}
