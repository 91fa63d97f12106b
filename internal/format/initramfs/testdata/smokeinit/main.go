// Command smokeinit stands in for bay0 in TestBootsInQEMU: as /init of an initramfs from Build
// on Spine's kernel it says hello, shows that the kernel cannot load modules and that the
// built-in watchdog driver bound with nowayout, and powers the machine off.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

func main() {
	// The kernel starts init with /dev/console as stdin, stdout and stderr.
	fmt.Println("smokeinit: hello")
	if err := run(); err != nil {
		fmt.Println("smokeinit: error:", err)
	}
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Println("smokeinit: power off:", err)
	}
}

func run() error {
	if err := os.MkdirAll("/proc", 0o755); err != nil {
		return err
	}
	if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	// Without CONFIG_MODULES there is no /proc/modules and finit_module does not exist.
	_, statErr := os.Stat("/proc/modules")
	loadErr := unix.FinitModule(0, "", 0)
	if !errors.Is(statErr, os.ErrNotExist) || !errors.Is(loadErr, unix.ENOSYS) {
		return fmt.Errorf("module support present: /proc/modules: %v, finit_module: %v", statErr, loadErr)
	}
	fmt.Println("smokeinit: no module support")

	// nowayout is not in sysfs (permission 0); the driver reports it when it binds to the
	// device (QEMU's -device i6300esb).
	buf := make([]byte, 1<<20)
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		return fmt.Errorf("read kernel log: %w", err)
	}
	for _, line := range strings.Split(string(buf[:n]), "\n") {
		if strings.Contains(line, "heartbeat=") && strings.Contains(line, "nowayout=") {
			fmt.Println("smokeinit: kernel says:", line)
		}
	}
	return nil
}
