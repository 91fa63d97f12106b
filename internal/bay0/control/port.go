package control

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// ErrNoPort means no virtio-serial port has the name asked for.
var ErrNoPort = errors.New("no virtio-serial port")

// FindPort returns the device node (/dev/vportNpM) of the virtio-serial port called name,
// found by reading sysfs/class/virtio-ports/*/name. Ports are scanned in name order, so the
// answer does not depend on directory order.
func FindPort(sysfs, name string) (string, error) {
	dir := filepath.Join(sysfs, "class", "virtio-ports")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("find port %q: %w", name, err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n, "name"))
		if err != nil {
			continue // a port without a name file, or one going away
		}
		if string(bytes.TrimRight(b, "\n")) == name {
			return "/dev/" + n, nil
		}
	}
	return "", fmt.Errorf("find port %q: %w in %s", name, ErrNoPort, dir)
}
