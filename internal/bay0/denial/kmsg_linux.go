package denial

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// actionsLogged is what bay0 writes to kernel.seccomp.actions_logged: refusals (errno), kills
// and complain-mode logs, never SECCOMP_RET_TRACE, which the filters use only to fail clone3
// with ENOSYS (see package seccomp).
const actionsLogged = "kill_process kill_thread errno log"

// ratelimitBurst is kernel.printk_ratelimit_burst: how many audit records the kernel prints per
// printk_ratelimit interval (5 s) when no audit daemon listens. The kernel's default, 10, loses
// most of a burst of refusals; 50 keeps a probe's worth and still bounds what a loop can put on
// the console to 10 lines a second.
const ratelimitBurst = "50"

// consoleLoglevel is the first field of kernel.printk: the kernel prints a record on the console
// only if its level is below this. 5 keeps warnings and worse and drops notices, which is the
// level of the audit records of refused calls. Those reach bay0 through /dev/kmsg either way;
// on the console, the kernel's own output can land in the middle of a line bay0 is writing, so
// a persona that makes refused calls could cut bay0's event lines apart.
const consoleLoglevel = "5"

// EnableLogging has the kernel log the seccomp actions bay0 reports, a burst at a time, to its
// log and not to the console.
func EnableLogging() error {
	for _, s := range [][2]string{
		{"/proc/sys/kernel/seccomp/actions_logged", actionsLogged},
		{"/proc/sys/kernel/printk_ratelimit_burst", ratelimitBurst},
		{"/proc/sys/kernel/printk", consoleLoglevel},
	} {
		if err := os.WriteFile(s[0], []byte(s[1]), 0); err != nil {
			return fmt.Errorf("set %s: %w", s[0], err)
		}
	}
	return nil
}

// OpenKernelLog opens /dev/kmsg at its end: only records made from now on are read.
func OpenKernelLog() (*os.File, error) {
	f, err := os.Open("/dev/kmsg")
	if err != nil {
		return nil, fmt.Errorf("open kernel log: %w", err)
	}
	if _, err := unix.Seek(int(f.Fd()), 0, io.SeekEnd); err != nil {
		f.Close()
		return nil, fmt.Errorf("seek kernel log: %w", err)
	}
	return f, nil
}

// maxRecord is larger than any /dev/kmsg record (the kernel's limit is 1024 bytes of text plus
// its prefix and dictionary); a smaller buffer makes read fail with EINVAL.
const maxRecord = 8192

// Follow reads kernel log records from r, one per read as /dev/kmsg gives them, and hands every
// seccomp record to out, until r fails. Records the kernel overwrote before they were read
// (EPIPE) are skipped.
func Follow(r io.Reader, out func(Record)) error {
	buf := make([]byte, maxRecord)
	for {
		n, err := r.Read(buf)
		if errors.Is(err, unix.EPIPE) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read kernel log: %w", err)
		}
		if rec, ok := Parse(string(buf[:n])); ok {
			out(rec)
		}
	}
}
