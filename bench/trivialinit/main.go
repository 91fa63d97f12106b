// Command trivialinit is the baseline of the boot benchmark: an init that does nothing but say
// how long the kernel took to reach it, then powers off.
package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

func main() {
	_ = os.MkdirAll("/proc", 0o755)
	_ = unix.Mount("proc", "/proc", "proc", 0, "")
	b, _ := os.ReadFile("/proc/uptime")
	fmt.Printf("trivialinit: uptime %s\n", b)
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}
