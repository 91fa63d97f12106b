// Command modinit is the first program of the boot benchmark's initramfs for Debian's generic
// kernel (rdinit=, see debian.Cmdline): it loads the modules of the load list (what Spine's
// kernel has built in), then becomes bay0, /init, still PID 1. Spine itself never loads a module.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/bench/debian"
	"alpinespine.org/spine/bench/kmod"
)

func main() {
	if err := run(); err != nil {
		fmt.Println("modinit: error:", err)
		_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}
}

func run() error {
	f, err := os.Open("/" + debian.LoadListPath)
	if err != nil {
		return err
	}
	items, err := kmod.ParseLoadList(f)
	f.Close()
	if err != nil {
		return err
	}
	start := time.Now()
	if err := kmod.LoadAll(filepath.Join("/lib/modules", debian.Release), items); err != nil {
		return err
	}
	fmt.Printf("modinit: loaded %d modules in %s\n", len(items), time.Since(start).Round(time.Millisecond))
	return unix.Exec("/init", []string{"/init"}, os.Environ())
}
