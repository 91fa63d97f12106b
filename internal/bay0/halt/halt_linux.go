package halt

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/format/event"
)

// Hooks run before the machine goes down (unmount /persist, record the reason); each gets a
// bounded time and their errors are printed, never obeyed.
type Hook func(action Action, reason string) error

// Now ends the machine: prints the marker line, kills every other process (personas hold
// /persist open through their mount namespaces), runs the hooks, syncs with a time limit, then
// reboots or powers off. It does not return. If the reboot
// syscall itself fails, PID 1 exits, the kernel panics and its panic timeout (-1) reboots.
func Now(console io.Writer, action Action, reason string, hooks ...Hook) {
	fmt.Fprintf(console, "bay0: halt: %s: %s\n", action, reason)
	fmt.Fprintln(console, event.New(event.Halt).With("action", action.String()).With("reason", reason))
	KillAll(2 * time.Second)
	for _, h := range hooks {
		if err := runBounded(func() error { return h(action, reason) }, 10*time.Second); err != nil {
			fmt.Fprintf(console, "bay0: halt: hook: %v\n", err)
		}
	}
	_ = runBounded(func() error { unix.Sync(); return nil }, 10*time.Second)
	cmd := unix.LINUX_REBOOT_CMD_RESTART
	if action == PowerOff {
		cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
	}
	err := unix.Reboot(cmd)
	fmt.Fprintf(console, "bay0: halt: reboot syscall: %v\n", err)
	os.Exit(1)
}

// StartLoadedKernel ends this kernel and jumps into the one stage 0 loaded with
// kexec_file_load: the hand-over from stage 0 to a slot's own kernel, the one way bay0 ends
// besides a reboot or a power off. Stage 0 runs no other process and has nothing mounted that
// the next kernel needs; the record is already written. It returns only with the error of a
// failed jump.
func StartLoadedKernel() error {
	unix.Sync()
	return unix.Reboot(unix.LINUX_REBOOT_CMD_KEXEC)
}

// KillAll SIGKILLs every process but PID 1 and reaps them, for at most d.
func KillAll(d time.Duration) {
	_ = unix.Kill(-1, unix.SIGKILL)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		pid, err := unix.Wait4(-1, nil, unix.WNOHANG, nil)
		if err == unix.ECHILD {
			return
		}
		if pid <= 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func runBounded(f func() error, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		return fmt.Errorf("did not finish within %s", d)
	}
}
