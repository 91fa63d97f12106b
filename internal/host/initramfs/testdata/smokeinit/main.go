// Command smokeinit stands in for bay0 in TestBootsInQEMU: as /init of an
// initramfs from Build it says hello, loads the modules of the load list,
// shows that module parameters arrived, and powers the machine off.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/kmod"
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
	f, err := os.Open("/etc/bay0/modules")
	if err != nil {
		return err
	}
	defer f.Close()
	items, err := kmod.ParseLoadList(f)
	if err != nil {
		return err
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return fmt.Errorf("uname: %w", err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	if err := kmod.LoadAll(filepath.Join("/lib/modules", release), items); err != nil {
		return err
	}
	fmt.Printf("smokeinit: modules loaded (%d)\n", len(items))

	// nowayout is not in sysfs (permission 0); the driver reports it when it
	// binds to the device (QEMU's -device i6300esb).
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
