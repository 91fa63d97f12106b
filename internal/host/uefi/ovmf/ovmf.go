// Package ovmf locates the x86-64 UEFI firmware that machines boot under QEMU: Debian's OVMF
// build with Secure Boot and SMM (package ovmf), whose code runs from a read-only flash and
// whose variables live in a second, writable flash.
package ovmf

import (
	"fmt"
	"os"
)

// Debian's files. The 4 MiB build is the one with room for Secure Boot keys; its ".secboot"
// code keeps the variable store in SMM, so a booted system cannot write the keys behind the
// firmware's back (QEMU: q35 with smm=on and a secure pflash).
const (
	Code         = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
	VarsTemplate = "/usr/share/OVMF/OVMF_VARS_4M.fd" // empty store: setup mode, no keys
)

// Check reports a clear error when the firmware is not installed.
func Check() error {
	for _, p := range []string{Code, VarsTemplate} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("UEFI firmware %s missing (install the Debian package ovmf; scripts/deps.sh does): %w", p, err)
		}
	}
	return nil
}
