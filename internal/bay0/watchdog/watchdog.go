// Package watchdog drives the hardware watchdog (/dev/watchdog, Linux watchdog API). bay0 opens
// it once, sets the timeout and feeds it; it never disables it: the driver is loaded with
// nowayout, and this package has no call that writes the magic close character.
//
// See Documentation/watchdog/watchdog-api.rst in the kernel tree.
package watchdog

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Device is an open watchdog.
type Device struct {
	fd      int
	timeout atomic.Int64 // time.Duration; SetTimeout may change it while a feeder reads it
	sys     syscalls
}

// syscalls is what the device needs from the kernel; tests substitute a fake.
type syscalls interface {
	setTimeout(fd int, seconds int) (int, error)
	keepalive(fd int) error
}

// FD is the open device's file descriptor, which stage 1 hands to the governor across exec.
func (d *Device) FD() int { return d.fd }

// SetTimeout changes the timeout (rounded up to whole seconds, at least 1) and feeds.
func (d *Device) SetTimeout(timeout time.Duration) error {
	nd, err := configure(d.fd, d.sys, timeout)
	if err != nil {
		return err
	}
	d.timeout.Store(nd.timeout.Load())
	return nil
}

// Timeout is the timeout the driver accepted (it may round).
func (d *Device) Timeout() time.Duration { return time.Duration(d.timeout.Load()) }

// Feed tells the watchdog the machine is alive.
func (d *Device) Feed() error {
	if err := d.sys.keepalive(d.fd); err != nil {
		return fmt.Errorf("feed watchdog: %w", err)
	}
	return nil
}

func configure(fd int, sys syscalls, timeout time.Duration) (*Device, error) {
	secs := int((timeout + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	got, err := sys.setTimeout(fd, secs)
	if err != nil {
		return nil, fmt.Errorf("set watchdog timeout %ds: %w", secs, err)
	}
	d := &Device{fd: fd, sys: sys}
	d.timeout.Store(int64(time.Duration(got) * time.Second))
	return d, d.Feed()
}
