package governor

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// MountInfo is one line of /proc/self/mountinfo, reduced to what bay0 checks.
type MountInfo struct {
	MountPoint string
	Options    []string // per-mount options ("ro", "nodev", ...)
	FSType     string
	Source     string
	SuperOpts  []string
}

// ParseMountInfo reads /proc/self/mountinfo (see proc(5)).
func ParseMountInfo(r io.Reader) ([]MountInfo, error) {
	var out []MountInfo
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 6 || len(g) < 3 {
			return nil, fmt.Errorf("mountinfo: malformed line %q", sc.Text())
		}
		out = append(out, MountInfo{MountPoint: f[4], Options: strings.Split(f[5], ","), FSType: g[0], Source: g[1], SuperOpts: strings.Split(g[2], ",")})
	}
	return out, sc.Err()
}

// Find returns the last (topmost) mount at a mount point.
func Find(ms []MountInfo, mountPoint string) (MountInfo, bool) {
	var found MountInfo
	ok := false
	for _, m := range ms {
		if m.MountPoint == mountPoint {
			found, ok = m, true
		}
	}
	return found, ok
}

func has(opts []string, o string) bool {
	for _, x := range opts {
		if x == o {
			return true
		}
	}
	return false
}

// CheckRoot is bay0's own validation of the Spine it runs from (Article I §3): the root must
// be SquashFS, read-only, on a device-mapper (dm-verity) device.
func CheckRoot(ms []MountInfo) (MountInfo, error) {
	root, ok := Find(ms, "/")
	switch {
	case !ok:
		return root, fmt.Errorf("root: no mount at /")
	case root.FSType != "squashfs":
		return root, fmt.Errorf("root: filesystem is %s, not squashfs", root.FSType)
	case !has(root.Options, "ro"):
		return root, fmt.Errorf("root: mounted %v, not read-only", root.Options)
	case !strings.HasPrefix(root.Source, "/dev/dm-"):
		return root, fmt.Errorf("root: device %s is not a dm-verity mapping", root.Source)
	}
	return root, nil
}
