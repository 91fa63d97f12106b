package governor

import (
	"fmt"
	"strings"

	"alpinespine.org/spine/internal/bay0/mountinfo"
	"alpinespine.org/spine/internal/format/event"
)

// CheckRoot is bay0's own validation of the Spine it runs from (Article I §3): the root must
// be SquashFS, read-only, on a device-mapper (dm-verity) device.
func CheckRoot(root mountinfo.Entry) error {
	switch {
	case root.FSType != "squashfs":
		return fmt.Errorf("root: filesystem is %s, not squashfs", root.FSType)
	case !root.Has("ro"):
		return fmt.Errorf("root: mounted %v, not read-only", root.Options)
	case !strings.HasPrefix(root.Source, "/dev/dm-"):
		return fmt.Errorf("root: device %s is not a dm-verity mapping", root.Source)
	}
	return nil
}

// checkRoot is the root phase: the running Spine must be a read-only dm-verity SquashFS root
// that refuses a write. Anything else is a mutable base, and the machine does not run on one.
func (g *Governor) checkRoot() (mountinfo.Entry, error) {
	root, err := g.kernel.Root()
	if err != nil {
		return mountinfo.Entry{}, err
	}
	g.logf("root: %s %s %v, writes refused (EROFS)", root.FSType, root.Source, root.Options)
	g.emit(event.New(event.RootChecked).With("fstype", root.FSType).With("source", root.Source).With("options", strings.Join(root.Options, ",")))
	return root, nil
}
