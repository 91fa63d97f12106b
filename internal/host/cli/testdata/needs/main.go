// Command needs is a workload for spine run's tests: it makes two calls outside the default
// allowlist (mbind, sethostname) and one below the floor (unshare), and reports how each went.
package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

func main() {
	_, _, e1 := unix.Syscall6(unix.SYS_MBIND, 0, 0, 0, 0, 0, 0)
	e2 := unix.Sethostname([]byte("needs"))
	e3 := unix.Unshare(unix.CLONE_NEWUSER)
	fmt.Printf("needs: mbind %v, sethostname %v, unshare %v\n", e1, e2, e3)
}
