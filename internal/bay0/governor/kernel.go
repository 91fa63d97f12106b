package governor

import (
	"io"
	"time"

	"alpinespine.org/spine/internal/bay0/mountinfo"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/handoff"
	"alpinespine.org/spine/internal/format/policy"
)

// kernel is everything the boot phases ask of the machine, so the phases themselves (their
// order, what each hands the next, what a failure stops) are plain code that tests drive with
// a fake. linuxKernel (kernel_linux.go) is the real one.
type kernel interface {
	// MountSystem mounts what stage 1 did not carry over (cgroup v2, a RAM /tmp) and turns kexec off.
	MountSystem() error
	// Handoff reads what stage 1 chose.
	Handoff() (handoff.Handoff, error)
	// Watchdog adopts the watchdog stage 1 armed (fd), or opens it when fd < 0.
	Watchdog(fd int, timeout time.Duration) (watchdogDevice, error)
	// Policy reads the policy baked into the running Spine.
	Policy() (policy.Policy, error)
	// Root returns the root mount once a write to it was refused with EROFS.
	Root() (mountinfo.Entry, error)
	// Record opens the boot-control record's partition.
	Record() (bootctl.Device, error)
	// Persist is the kernel side of unlocking /persist.
	Persist() persistSystem
	// PersonaHost prepares the machine for personas (the cgroup parent, logging of refused
	// system calls) and returns the kernel log the refusals are read from, and PID 1's
	// reaper, made before any child exists.
	PersonaHost() (kmsg io.Reader, r *reaper, err error)
	// ControlPort opens the bay0.ctl serial port and names it.
	ControlPort() (io.ReadWriter, string, error)
}

// watchdogDevice is an open hardware watchdog: watchdog.Device in the real system.
type watchdogDevice interface {
	SetTimeout(timeout time.Duration) error
	Timeout() time.Duration
	Feed() error
}
