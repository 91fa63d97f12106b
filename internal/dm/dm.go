// Package dm maps device-mapper targets for bay0: dm-verity over a Spine slot, and (for
// /persist) dm-crypt. It only builds tables and asks the kernel; policy lives with the callers.
package dm

import (
	"fmt"

	"alpinespine.org/spine/internal/manifest"
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
