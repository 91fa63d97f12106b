package governor

import (
	"fmt"
	"strings"

	"alpinespine.org/spine/internal/bay0/mountinfo"
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
