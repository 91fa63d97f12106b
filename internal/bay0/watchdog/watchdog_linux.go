package watchdog

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Path is the watchdog device.
const Path = "/dev/watchdog"

type linuxSyscalls struct{}

// WDIOC_SETTIMEOUT and WDIOC_KEEPALIVE from include/uapi/linux/watchdog.h.
func (linuxSyscalls) setTimeout(fd int, seconds int) (int, error) {
	v := seconds
	if err := unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, v); err != nil {
		return 0, err
	}
	got, err := unix.IoctlGetInt(fd, unix.WDIOC_GETTIMEOUT)
	if err != nil {
		return 0, err
	}
	return got, nil
}

func (linuxSyscalls) keepalive(fd int) error {
	_, err := unix.IoctlGetInt(fd, unix.WDIOC_KEEPALIVE)
	return err
}

// Open opens and arms the watchdog with the given timeout. From here on the machine resets
// unless Feed is called within every timeout.
func Open(timeout time.Duration) (*Device, error) {
	return open(unix.O_CLOEXEC, timeout)
}

// OpenInherited opens and arms the watchdog like Open, but leaves it open across exec: stage 1
// arms it before it touches the boot record and hands it, still counting, to the governor.
func OpenInherited(timeout time.Duration) (*Device, error) {
	return open(0, timeout)
}

func open(flags int, timeout time.Duration) (*Device, error) {
	fd, err := unix.Open(Path, unix.O_WRONLY|flags, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", Path, err)
	}
	d, err := configure(fd, linuxSyscalls{}, timeout)
	if err != nil {
		// Closing without the magic character leaves a nowayout watchdog running: the
		// machine resets, which is what an unusable watchdog deserves.
		unix.Close(fd)
		return nil, err
	}
	return d, nil
}

// Adopt takes over a watchdog that stage 1 left open on fd, sets timeout and feeds it. The
// descriptor is made close-on-exec: no persona inherits it.
func Adopt(fd int, timeout time.Duration) (*Device, error) {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return nil, fmt.Errorf("adopt watchdog fd %d: %w", fd, err)
	}
	return configure(fd, linuxSyscalls{}, timeout)
}
