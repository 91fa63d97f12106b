package dm

import (
	"fmt"
	"os"
	"time"

	devmapper "github.com/anatol/devmapper.go"
	"golang.org/x/sys/unix"
)

// MapVerity creates a read-only dm-verity device and returns its /dev path.
func MapVerity(v Verity) (string, error) {
	length, hashStart, params, err := v.table()
	if err != nil {
		return "", err
	}
	m := v.Manifest
	t := devmapper.VerityTable{
		Length:         length, // bytes: the library converts to sectors
		HashType:       1,
		DataDevice:     v.Device,
		HashDevice:     v.Device,
		DataBlockSize:  uint64(m.DataBlockSize),
		HashBlockSize:  uint64(m.HashBlockSize),
		NumDataBlocks:  m.DataBlocks,
		HashStartBlock: hashStart,
		Algorithm:      m.HashAlgorithm,
		Digest:         m.RootHash,
		Salt:           m.Salt,
		Params:         params,
	}
	if err := devmapper.CreateAndLoad(v.Name, "", devmapper.ReadOnlyFlag, t); err != nil {
		return "", fmt.Errorf("create verity device %q on %s: %w", v.Name, v.Device, err)
	}
	return nodeOf(v.Name)
}

// Remove removes a mapping.
func Remove(name string) error {
	if err := devmapper.Remove(name); err != nil {
		return fmt.Errorf("remove device %q: %w", name, err)
	}
	return nil
}

// nodeOf finds the device node devtmpfs created for a mapping.
func nodeOf(name string) (string, error) {
	info, err := devmapper.InfoByName(name)
	if err != nil {
		return "", fmt.Errorf("query device %q: %w", name, err)
	}
	p := fmt.Sprintf("/dev/dm-%d", unix.Minor(info.DevNo))
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return "", fmt.Errorf("device node %s for %q did not appear", p, name)
}
