package governor

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mountSystem mounts what stage 1 did not carry over: cgroup v2 and a RAM /tmp. Everything
// outside /persist is RAM and dies with the boot.
func mountSystem() error {
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
// kernel would replace the verified one without a boot through stage 0's law. A kernel built
// without kexec has no switch to turn.
func disableKexec() error {
	const path = "/proc/sys/kernel/kexec_load_disabled"
	err := os.WriteFile(path, []byte("1\n"), 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("disable kexec: %w", err)
	}
	return nil
}
