// Package stage0 builds stage 0, the boot program the firmware starts from the EFI system
// partition: Spine's kernel with an initramfs (bay0 in its stage 0 role and the trusted keys)
// and a fixed command line built into the image. Once signed with the owner's Secure Boot key,
// every byte that runs before stage 0's bay0 is covered by that one signature; stage 0 then
// applies the boot law and starts the chosen slot's own kernel, which the slot's signed
// manifest covers.
package stage0

import (
	"bytes"
	"context"
	"io"

	"alpinespine.org/spine/internal/format/initramfs"
	"alpinespine.org/spine/internal/host/kernel"
)

// Cmdline is stage 0's command line, built into the image (the firmware's is ignored): the
// serial console, and quiet, so that the console shows one kernel boot log per boot, the slot
// kernel's. A panic reboots by the kernel's own configuration.
const Cmdline = "console=ttyS0 quiet"

// Spec is what stage 0 carries besides the kernel.
type Spec struct {
	Bay0        []byte   // static bay0
	TrustedKeys [][]byte // PEM public keys the Spines must be signed with
}

// Build returns the stage 0 image (kernel.Kernel.Image, a PE/EFI binary to sign) for s, built
// in cacheDir's kernel build tree unless already cached. log receives progress (may be nil).
func Build(ctx context.Context, cacheDir string, s Spec, log io.Writer) (kernel.Kernel, error) {
	var archive bytes.Buffer
	if err := initramfs.Archive(&archive, initramfs.Spec{Bay0: s.Bay0, TrustedKeys: s.TrustedKeys, Role: initramfs.RoleStage0}); err != nil {
		return kernel.Kernel{}, err
	}
	return kernel.BuildStage0(ctx, cacheDir, kernel.Options{Log: log}, kernel.Stage0{Initramfs: archive.Bytes(), Cmdline: Cmdline})
}
