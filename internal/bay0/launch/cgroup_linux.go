package launch

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// KillCgroup kills every process of the cgroup name, relative to the directory fd dir, at
// once (cgroup.kill: no process can fork away from it).
func KillCgroup(dir int, name string) error { return writeAt(dir, name+"/cgroup.kill", "1") }

// JoinCgroup moves the calling process, all its threads, into the cgroup name, relative to
// the directory fd dir.
func JoinCgroup(dir int, name string) error { return writeAt(dir, name+"/cgroup.procs", "0") }

// writeAt writes value to the file name, relative to the directory fd dir.
func writeAt(dir int, name, value string) error {
	fd, err := unix.Openat(dir, name, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(value)); err != nil {
		return fmt.Errorf("write %q to %s: %w", value, name, err)
	}
	return nil
}

// Populated reports whether the cgroup name, relative to the directory fd dir, or one below
// it still has a process (cgroup.events).
func Populated(dir int, name string) (bool, error) {
	fd, err := unix.Openat(dir, name+"/cgroup.events", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("open %s/cgroup.events: %w", name, err)
	}
	defer unix.Close(fd)
	var b [256]byte
	n, err := unix.Read(fd, b[:])
	if err != nil {
		return false, fmt.Errorf("read %s/cgroup.events: %w", name, err)
	}
	for _, line := range strings.Split(string(b[:n]), "\n") {
		if v, ok := strings.CutPrefix(line, "populated "); ok {
			return v != "0", nil
		}
	}
	return false, errors.New(name + "/cgroup.events has no populated line")
}
