package dm

import (
	"fmt"
	"os"
	"runtime"
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

// MapCrypt creates a read-write dm-crypt device and returns its /dev path. The key goes
// into the calling thread's keyring only for as long as the kernel takes to load the table
// (dm-crypt copies it into its cipher state), and is invalidated right after, whether the
// mapping was made or not.
func MapCrypt(c Crypt) (string, error) {
	if err := c.check(); err != nil {
		return "", err
	}
	// The thread keyring is private to this OS thread, and the table load that reads the key
	// must run on the same thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	id, err := unix.AddKey("logon", c.keyDescription(), c.Key, unix.KEY_SPEC_THREAD_KEYRING)
	if err != nil {
		return "", fmt.Errorf("add key for crypt device %q to the keyring: %w", c.Name, err)
	}
	t := devmapper.CryptTable{
		Length:        c.Length, // bytes: the library converts to sectors
		BackendDevice: c.Device,
		BackendOffset: c.Offset,
		Encryption:    c.Cipher,
		KeyID:         c.keyID(),
		IVTweak:       c.IVTweak,
		SectorSize:    c.SectorSize,
	}
	err = devmapper.CreateAndLoad(c.Name, c.UUID, 0, t)
	if _, ierr := unix.KeyctlInt(unix.KEYCTL_INVALIDATE, id, 0, 0, 0); ierr != nil && err == nil {
		err = fmt.Errorf("invalidate key of crypt device %q: %w", c.Name, ierr)
		devmapper.Remove(c.Name)
		return "", err
	}
	if err != nil {
		return "", fmt.Errorf("create crypt device %q on %s: %w", c.Name, c.Device, err)
	}
	return nodeOf(c.Name)
}
