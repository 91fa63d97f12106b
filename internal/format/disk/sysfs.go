package disk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// FindBlockDevice returns the device node ("/dev/vda2") of the partition
// called name, by reading the uevent file of every block device under
// <sysfs>/class/block. The kernel puts the GPT name there as PARTNAME.
// Two partitions with the same name are refused (ErrAmbiguous): a second disk
// carrying a "spine-a" must not decide what boots.
func FindBlockDevice(sysfs string, name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("find block device: %w: empty name", ErrNoPartition)
	}
	dir := filepath.Join(sysfs, "class", "block")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("find block device %q: %w", name, err)
	}
	var found []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "uevent"))
		if errors.Is(err, os.ErrNotExist) {
			continue // the device went away while we looked
		}
		if err != nil {
			return "", fmt.Errorf("find block device %q: %w", name, err)
		}
		u := parseUevent(b)
		if u["PARTNAME"] != name {
			continue
		}
		dev := u["DEVNAME"]
		if !filepath.IsLocal(dev) {
			return "", fmt.Errorf("find block device %q: %s: bad DEVNAME %q", name, e.Name(), dev)
		}
		found = append(found, "/dev/"+dev)
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("find block device %q: %w", name, ErrNoPartition)
	case 1:
		return found[0], nil
	default:
		return "", fmt.Errorf("find block device %q: %w: %s", name, ErrAmbiguous, strings.Join(found, ", "))
	}
}

// parseUevent reads KEY=VALUE lines; a repeated key keeps its first value.
func parseUevent(b []byte) map[string]string {
	m := make(map[string]string)
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if _, dup := m[k]; !dup {
			m[k] = v
		}
	}
	return m
}
