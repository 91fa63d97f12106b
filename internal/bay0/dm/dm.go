// Package dm maps device-mapper targets for bay0: dm-verity over a Spine slot, and (for
// /persist) dm-crypt. It only builds tables and asks the kernel; policy lives with the callers.
package dm

import (
	"fmt"

	"alpinespine.org/spine/internal/format/manifest"
)

// Verity describes a dm-verity mapping of a Spine slot whose data and hash area share one
// device, as in a Spine image.
type Verity struct {
	Name   string // device-mapper name, e.g. "spine-a"
	Device string // the slot's block device
	// RestartOnCorruption makes a corrupt block reboot the machine. Eager verification maps
	// without it, so that damage found at boot marks the slot bad instead of reboot-looping.
	RestartOnCorruption bool
	Manifest            manifest.Manifest
}

// table renders the dm-verity table arguments (see the kernel's
// Documentation/admin-guide/device-mapper/verity.rst).
func (v Verity) table() (length uint64, hashStart uint64, params []string, err error) {
	m := v.Manifest
	if m.HashOffset%uint64(m.HashBlockSize) != 0 {
		return 0, 0, nil, fmt.Errorf("hash offset %d is not block aligned", m.HashOffset)
	}
	// The hash area starts with the verity superblock, one hash block long; the tree follows.
	hashStart = m.HashOffset/uint64(m.HashBlockSize) + 1
	if v.RestartOnCorruption {
		params = []string{"1", "restart_on_corruption"}
	}
	return m.DataBlocks * uint64(m.DataBlockSize), hashStart, params, nil
}

// Crypt describes a dm-crypt mapping of a LUKS2 data segment.
type Crypt struct {
	Name       string // device-mapper name, e.g. "persist"
	UUID       string // device-mapper UUID; cryptsetup's form is CRYPT-LUKS2-<uuid without dashes>-<name>
	Device     string // the partition holding the container
	Offset     uint64 // bytes from the start of Device to the encrypted data
	Length     uint64 // bytes of encrypted data
	Cipher     string // e.g. "aes-xts-plain64"
	IVTweak    uint64
	SectorSize uint64 // encryption sector size in bytes: 512 or 4096
	// Key is the volume key. MapCrypt hands it to the kernel through the keyring (a "logon"
	// key, which user space cannot read back), so the table names the key instead of
	// carrying it as hex text; MapCrypt does not keep or wipe Key: its owner does.
	Key []byte
}

// keyDescription names the logon key of a mapping; logon keys need a "subsystem:" prefix.
func (c Crypt) keyDescription() string { return "bay0:" + c.Name }

// keyID is the table's key argument: ":<key size>:logon:<description>" (see the kernel's
// Documentation/admin-guide/device-mapper/dm-crypt.rst).
func (c Crypt) keyID() string { return fmt.Sprintf(":%d:logon:%s", len(c.Key), c.keyDescription()) }

// check refuses a mapping dm-crypt would reject less clearly.
func (c Crypt) check() error {
	switch {
	case c.Name == "" || c.Device == "" || c.Cipher == "":
		return fmt.Errorf("crypt mapping %q: name, device and cipher are required", c.Name)
	case len(c.Key) == 0:
		return fmt.Errorf("crypt mapping %q: no key", c.Name)
	case c.SectorSize != 512 && c.SectorSize != 4096:
		return fmt.Errorf("crypt mapping %q: sector size %d is neither 512 nor 4096", c.Name, c.SectorSize)
	case c.Length == 0 || c.Length%c.SectorSize != 0 || c.Offset%512 != 0:
		return fmt.Errorf("crypt mapping %q: segment at %d of %d bytes is not sector aligned", c.Name, c.Offset, c.Length)
	}
	return nil
}
