package persona

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/launch"
)

// PrepareCgroups makes parent (e.g. /sys/fs/cgroup/personas) and enables the persona
// controllers on the way down from the cgroup v2 root, so that leaves under parent can be
// limited. Precondition: cgroup2 is mounted at filepath.Dir(parent).
func PrepareCgroups(parent string) error {
	root := filepath.Dir(parent)
	if err := writeFile(filepath.Join(root, "cgroup.subtree_control"), SubtreeControl); err != nil {
		return err
	}
	if err := os.Mkdir(parent, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("make cgroup %s: %w", parent, err)
	}
	return writeFile(filepath.Join(parent, "cgroup.subtree_control"), SubtreeControl)
}

// Cgroup is a persona's cgroup v2 leaf.
type Cgroup struct {
	Path string
}

// NewCgroup makes the leaf parent/name with the limits of l.Files (the rest, l.ExecFiles, are
// Set before the workload's exec). A leftover leaf of the same name (the
// governor never leaves one, but a leaf is cheap to check) is emptied and removed first.
func NewCgroup(parent, name string, l Limits) (*Cgroup, error) {
	c := &Cgroup{Path: filepath.Join(parent, name)}
	err := os.Mkdir(c.Path, 0o755)
	if errors.Is(err, fs.ErrExist) {
		if err = c.Destroy(time.Second); err == nil {
			err = os.Mkdir(c.Path, 0o755)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("make cgroup %s: %w", c.Path, err)
	}
	if err := c.Set(l.Files()); err != nil {
		_ = os.Remove(c.Path)
		return nil, err
	}
	return c, nil
}

// Set writes files into the leaf, in order.
func (c *Cgroup) Set(files []CgroupFile) error {
	for _, f := range files {
		if err := writeFile(filepath.Join(c.Path, f.Name), f.Value); err != nil {
			return err
		}
	}
	return nil
}

// Open returns a directory fd of the leaf for SysProcAttr.CgroupFD (CLONE_INTO_CGROUP).
func (c *Cgroup) Open() (int, error) {
	fd, err := unix.Open(c.Path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open cgroup %s: %w", c.Path, err)
	}
	return fd, nil
}

// Events reads one of the leaf's flat-keyed files, e.g. memory.events.
func (c *Cgroup) Events(file string) (map[string]int64, error) {
	f, err := os.Open(filepath.Join(c.Path, file))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseKeyed(f)
}

// Memory samples the leaf's memory pressure and memory.max events.
func (c *Cgroup) Memory() (MemoryStat, error) {
	f, err := os.Open(filepath.Join(c.Path, "memory.pressure"))
	if err != nil {
		return MemoryStat{}, err
	}
	defer f.Close()
	full, err := ParsePressure(f)
	if err != nil {
		return MemoryStat{}, fmt.Errorf("%s/memory.pressure: %w", c.Path, err)
	}
	ev, err := c.Events("memory.events")
	if err != nil {
		return MemoryStat{}, err
	}
	st, err := c.Events("memory.stat")
	if err != nil {
		return MemoryStat{}, err
	}
	return MemoryStat{FullStallUS: full, MaxEvents: ev["max"],
		Refaults: st["workingset_refault_anon"] + st["workingset_refault_file"]}, nil
}

// Destroy kills every process of the leaf (cgroup.kill: atomic, no process can fork away),
// waits up to timeout for it to be empty, and removes it. Removing a missing leaf is not an
// error.
func (c *Cgroup) Destroy(timeout time.Duration) error {
	if err := writeFile(filepath.Join(c.Path, "cgroup.kill"), "1"); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	deadline := time.Now().Add(timeout)
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		ev, err := c.Events("cgroup.events")
		if err != nil {
			return fmt.Errorf("read %s/cgroup.events: %w", c.Path, err)
		}
		if ev["populated"] == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s still has processes %s after cgroup.kill", c.Path, timeout)
		}
		time.Sleep(delay)
	}
	// The kernel may briefly refuse the rmdir while the last exiting task is being released.
	for {
		// An exec health check's cgroups inside the leaf, empty by now, go first.
		_ = unix.Rmdir(filepath.Join(c.Path, launch.CheckCgroup, launch.CheckInner))
		_ = unix.Rmdir(filepath.Join(c.Path, launch.CheckCgroup))
		err := unix.Rmdir(c.Path)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", c.Path, err)
		}
		time.Sleep(time.Millisecond)
	}
}

func writeFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	return nil
}
