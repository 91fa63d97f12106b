package governor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/bay0/denial"
	"alpinespine.org/spine/internal/bay0/mountinfo"
	"alpinespine.org/spine/internal/bay0/persona"
	"alpinespine.org/spine/internal/bay0/watchdog"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/disk"
	"alpinespine.org/spine/internal/format/handoff"
	"alpinespine.org/spine/internal/format/policy"
)

// linuxKernel is the machine bay0 runs on, as PID 1.
type linuxKernel struct{}

func (linuxKernel) MountSystem() error {
	// Everything outside /persist is RAM and dies with the boot.
	for _, m := range []struct {
		src, dst, fstype string
		flags            uintptr
		data             string
	}{
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "nsdelegate"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=1777,size=64m"},
	} {
		if err := unix.Mount(m.src, m.dst, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.dst, err)
		}
	}
	return disableKexec()
}

// disableKexec closes kexec for the rest of this boot (one way: the kernel refuses to clear
// it). Stage 0 needed kexec_file_load to start this kernel; once a Spine runs, loading another
// kernel would replace the verified one without a boot through stage 0's law. Spine's kernel
// always has the switch: a kernel without it fails the boot rather than run with kexec open.
func disableKexec() error {
	if err := os.WriteFile("/proc/sys/kernel/kexec_load_disabled", []byte("1\n"), 0); err != nil {
		return fmt.Errorf("disable kexec: %w", err)
	}
	return nil
}

func (linuxKernel) Handoff() (handoff.Handoff, error) { return handoff.Read("") }

func (linuxKernel) Watchdog(fd int, timeout time.Duration) (watchdogDevice, error) {
	if fd >= 0 {
		return watchdog.Adopt(fd, timeout)
	}
	return watchdog.Open(timeout)
}

func (linuxKernel) Policy() (policy.Policy, error) { return LoadPolicy("") }

// Root reads the root mount and probes it with a write: a read-only dm-verity SquashFS
// refuses it with EROFS, and anything else is a mutable base.
func (linuxKernel) Root() (mountinfo.Entry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return mountinfo.Entry{}, fmt.Errorf("read mountinfo: %w", err)
	}
	root, err := mountinfo.Find(f, "/")
	f.Close()
	if err != nil {
		return mountinfo.Entry{}, fmt.Errorf("root: %w", err)
	}
	if err := CheckRoot(root); err != nil {
		return mountinfo.Entry{}, err
	}
	fd, err := unix.Open("/.bay0-write-probe", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err == nil {
		unix.Close(fd)
		return mountinfo.Entry{}, errors.New("root: a file could be created on the Spine")
	}
	if !errors.Is(err, unix.EROFS) {
		return mountinfo.Entry{}, fmt.Errorf("root: write probe failed with %v, want EROFS", err)
	}
	return root, nil
}

func (linuxKernel) Record() (bootctl.Device, error) {
	p, err := disk.FindBlockDevice("/sys", "bay0-state")
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	return f, nil
}

func (linuxKernel) Persist() persistSystem { return linuxPersist{} }

func (linuxKernel) PersonaHost() (io.Reader, *reaper, error) {
	r := newReaper()
	if err := persona.PrepareCgroups(cgroupParent); err != nil {
		return nil, nil, err
	}
	// Refused system calls are logged by the kernel and reported by the supervisor.
	if err := denial.EnableLogging(); err != nil {
		return nil, nil, err
	}
	kmsg, err := denial.OpenKernelLog()
	if err != nil {
		return nil, nil, err
	}
	return kmsg, r, nil
}

func (linuxKernel) ControlPort() (io.ReadWriter, string, error) {
	port, err := control.OpenPort("/sys", "bay0.ctl")
	if err != nil {
		return nil, "", err
	}
	return port, port.Name(), nil
}
