package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/keys"
	"alpinespine.org/spine/internal/host/build"
	"alpinespine.org/spine/internal/host/cli"
	"alpinespine.org/spine/internal/host/kernel"
	"alpinespine.org/spine/internal/host/persistfmt"
	"alpinespine.org/spine/internal/host/provision"
	"alpinespine.org/spine/internal/host/stage0"
	"alpinespine.org/spine/internal/host/uefi/fat"
	"alpinespine.org/spine/internal/host/uefi/ovmf"
	"alpinespine.org/spine/internal/host/uefi/sbkeys"
	"alpinespine.org/spine/internal/host/vm"
)

// firmwareTimeout bounds one firmware boot under TCG on a loaded machine: OVMF alone takes tens
// of seconds before it runs the boot program.
const firmwareTimeout = 6 * time.Minute

// benchFirmware boots the demo disk as hardware does (OVMF with Secure Boot on and the owner's
// certificate enrolled, the signed stage 0 on the EFI system partition, which verifies slot a
// and starts the slot's own kernel) and the same disk directly (QEMU's -kernel and -initrd with
// the same kernel), alternating, and compares the wall time from QEMU's start to bay0's
// personas-up event.
func benchFirmware(ctx context.Context, cfg config, dir string) error {
	m, err := cfg.machine(ctx)
	if err != nil {
		return err
	}
	if err := ovmf.Check(); err != nil {
		return err
	}
	disk, vars, err := firmwareDisk(ctx, m, dir)
	if err != nil {
		return err
	}
	var fw, direct []time.Duration
	runs := cfg.runs(bootRuns)
	for range runs {
		f, err := bootWall(ctx, dir, disk, vars, m)
		if err != nil {
			return fmt.Errorf("firmware boot: %w", err)
		}
		d, err := bootWall(ctx, dir, disk, "", m)
		if err != nil {
			return fmt.Errorf("direct boot: %w", err)
		}
		fw, direct = append(fw, f), append(direct, d)
	}
	cfg.emit(timed("boot-firmware-vs-direct", median(fw), "direct kernel boot", median(direct), fmt.Sprintf(
		"TCG guest, the demo disk (stage 0 signed with the owner's Secure Boot key on its EFI system partition, slot a carrying Spine's kernel %s); "+
			"ours: OVMF (q35, SMM, Secure Boot on, owner's certificate enrolled) -> stage 0 -> boot law, slot a verified -> kexec of slot a's kernel -> bay0; "+
			"reference: the same disk with QEMU -kernel/-initrd (pc machine, the same kernel, bay0's initramfs); "+
			"wall time from QEMU's start to bay0's personas-up event, /persist KDF (test cost) on both sides; ratio = direct / firmware; no floor; median of %d alternating",
		m.kernel.Release, runs)))
	return nil
}

// firmwareDisk writes the demo disk as `spine disk --uefi-key --uefi-cert` does: slot a holds
// the demo Spine with its kernel, the EFI system partition stage 0 built with m's bay0 and
// trusted key and signed with a Secure Boot key made here. It returns the disk and a variable
// store with that key's certificate enrolled.
func firmwareDisk(ctx context.Context, m machine, dir string) (disk, vars string, err error) {
	priv, err := keys.LoadPrivate(m.key)
	if err != nil {
		return "", "", err
	}
	spine := filepath.Join(dir, "demo-kernel.spine")
	if _, err := build.Build(ctx, build.Options{Config: "demo/spine.toml", Key: priv, Bay0: m.bay0, PersonaInit: m.personaInit, Out: spine, Epoch: 1767225600,
		Version: 1, Kernel: m.kernel.Release, KernelImage: m.kernel.Image}); err != nil {
		return "", "", err
	}
	var bay0, pub []byte
	if bay0, err = os.ReadFile(m.bay0); err != nil {
		return "", "", err
	}
	if pub, err = os.ReadFile(m.pub); err != nil {
		return "", "", err
	}
	cache, err := kernel.DefaultCacheDir()
	if err != nil {
		return "", "", err
	}
	s0, err := stage0.Build(ctx, cache, stage0.Spec{Bay0: bay0, TrustedKeys: [][]byte{pub}}, os.Stderr)
	if err != nil {
		return "", "", fmt.Errorf("build stage 0: %w", err)
	}
	kd := filepath.Join(dir, "uefi")
	if err := sbkeys.Generate(kd, "Spine bench"); err != nil {
		return "", "", err
	}
	key, crt := filepath.Join(kd, sbkeys.KeyFile), filepath.Join(kd, sbkeys.CertFile)
	signed, err := cli.SignBootProgram(s0.Image, key, crt)
	if err != nil {
		return "", "", fmt.Errorf("sign stage 0: %w", err)
	}
	disk = filepath.Join(dir, "firmware-disk.img")
	if err := provision.Create(provision.Options{Out: disk, A: spine, PersistSize: 64 << 20, Seed: "bench",
		Passphrase: []byte(benchPassphrase), KDF: persistfmt.TestKDF(),
		ESP: []fat.File{{Path: provision.BootProgramPath, Data: signed}}}); err != nil {
		return "", "", err
	}
	pair, err := sbkeys.Load(key, crt)
	if err != nil {
		return "", "", err
	}
	store, err := cli.WriteUEFIVars(ovmf.VarsTemplate, pair.Cert.Raw)
	if err != nil {
		return "", "", err
	}
	vars = filepath.Join(dir, "vars.fd")
	return disk, vars, os.WriteFile(vars, store, 0o644)
}

// bootWall boots a fresh copy of disk, through the firmware with a fresh copy of vars if vars
// is set, else directly with m's kernel and initramfs, and returns the wall time from QEMU's
// start to bay0's personas-up event.
func bootWall(ctx context.Context, dir, disk, vars string, m machine) (time.Duration, error) {
	run := filepath.Join(dir, "run.img")
	if err := copyFile(disk, run); err != nil {
		return 0, err
	}
	a := vm.NewAnswerer([]byte(benchPassphrase))
	c := vm.Config{Disk: run, Console: a, Stdin: a, Net: true, Timeout: firmwareTimeout}
	if vars != "" {
		fresh := filepath.Join(dir, "run-vars.fd")
		if err := copyFile(vars, fresh); err != nil {
			return 0, err
		}
		c.Firmware = &vm.Firmware{Code: ovmf.Code, Vars: fresh}
	} else {
		c.Kernel, c.Initrd = m.kernel.Vmlinux, m.initrd
	}
	start := time.Now()
	mach, err := vm.Start(ctx, c)
	if err != nil {
		return 0, err
	}
	defer func() { _ = mach.Kill(); _, _ = mach.Wait() }()
	if _, err := mach.WaitForEvent(event.PersonasUp, nil, firmwareTimeout); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}
