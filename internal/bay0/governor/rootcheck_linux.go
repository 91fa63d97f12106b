package governor

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/mountinfo"
	"alpinespine.org/spine/internal/format/event"
)

// validateRoot checks the running Spine: a read-only dm-verity SquashFS root that refuses a
// write. Anything else is a mutable base, and the machine does not run on one.
func (g *Governor) validateRoot() error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	root, err := mountinfo.Find(f, "/")
	f.Close()
	if err != nil {
		return fmt.Errorf("root: %w", err)
	}
	if err := CheckRoot(root); err != nil {
		return err
	}
	fd, err := unix.Open("/.bay0-write-probe", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err == nil {
		unix.Close(fd)
		return errors.New("root: a file could be created on the Spine")
	}
	if !errors.Is(err, unix.EROFS) {
		return fmt.Errorf("root: write probe failed with %v, want EROFS", err)
	}
	g.logf("root: %s %s %v, writes refused (EROFS)", root.FSType, root.Source, root.Options)
	g.emit(event.New(event.RootChecked).With("fstype", root.FSType).With("source", root.Source).With("options", strings.Join(root.Options, ",")))
	return nil
}
