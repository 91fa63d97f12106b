//go:build e2e

package e2e

// UEFI Secure Boot with the owner's keys (Article I §2.4: verified cryptographically at boot,
// from the first instruction read from the disk). The machine boots through OVMF with Secure
// Boot on and nothing from the host but the disk: the firmware runs the boot program on the
// EFI system partition only if the owner's key signed it.
//
// Until our own kernel also carries a built-in initramfs and command line and boots bay0 from
// the disk, the boot program here is our kernel's image (bzImage with the EFI stub) signed with
// the owner's key. It proves the chain up to the kernel: its EFI stub runs and reports Secure
// Boot on. It has no command line, so it prints nothing more on the serial console.

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"alpinespine.org/spine/internal/host/cli"
	"alpinespine.org/spine/internal/host/provision"
	"alpinespine.org/spine/internal/host/uefi/authenticode"
	"alpinespine.org/spine/internal/host/uefi/fat"
	"alpinespine.org/spine/internal/host/uefi/ovmf"
	"alpinespine.org/spine/internal/host/uefi/sbkeys"
	"alpinespine.org/spine/internal/host/vm"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// uefiTimeout bounds a firmware boot under TCG on a loaded machine: OVMF alone takes tens of
// seconds before it runs the boot program.
const uefiTimeout = 4 * time.Minute

// Console lines of the chain. The EFI stub prints its line through the firmware's console
// only when the firmware says Secure Boot is on; BdsDxe is OVMF's boot manager.
const (
	stubSecureBoot = "EFI stub: UEFI Secure Boot is enabled."
	bdsNoBoot      = "BdsDxe: No bootable option or device was found."
	bdsFailed      = "BdsDxe: failed to "
)

// uefiFixture holds the owner's keys (made by spine keygen), the variable store with the
// owner's certificate enrolled (spine uefi-vars) and a stranger's key the firmware does not hold.
type uefiFixture struct {
	dir             string
	owner, stranger string // key directories
	vars            string
	spine           string // a small signed Spine for slot A
	kernel          []byte // our kernel's image as built: signed by no one
}

var uefiOnce = sync.OnceValues(func() (uefiFixture, error) {
	u := uefiFixture{dir: filepath.Join(fx.dir, "uefi")}
	if err := ovmf.Check(); err != nil {
		return u, err
	}
	u.owner, u.stranger = filepath.Join(u.dir, "owner"), filepath.Join(u.dir, "stranger")
	u.vars = filepath.Join(u.dir, "vars.fd")
	for _, args := range [][]string{
		{"keygen", "--out", u.owner, "--uefi-cn", "Spine Owner"},
		{"keygen", "--out", u.stranger, "--uefi-cn", "Stranger"},
		{"uefi-vars", "--cert", filepath.Join(u.owner, sbkeys.CertFile), "--out", u.vars},
	} {
		if err := spineCLI(args...); err != nil {
			return u, err
		}
	}
	var err error
	u.kernel, err = os.ReadFile(fx.kernel.Image)
	return u, err
})

func uefiFx(t *testing.T) uefiFixture {
	t.Helper()
	u, err := uefiOnce()
	if err != nil {
		t.Fatalf("UEFI fixture: %v", err)
	}
	return u
}

// spineCLI runs the spine command line in process, as an operator would.
func spineCLI(args ...string) error {
	var out bytes.Buffer
	code := cli.Run(context.Background(), args, &cli.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out,
		Getenv: func(k string) string {
			if k == "SOURCE_DATE_EPOCH" {
				return "1767225600"
			}
			return ""
		}})
	if code != 0 {
		return &cliError{args: args, out: out.String()}
	}
	return nil
}

type cliError struct {
	args []string
	out  string
}

func (e *cliError) Error() string { return "spine " + strings.Join(e.args, " ") + ": " + e.out }

// espDisk writes a machine disk whose EFI system partition holds program, as it is, as the
// boot program; slot A holds junk (the boot programs here never reach it).
func espDisk(t *testing.T, program []byte) string {
	t.Helper()
	junk := filepath.Join(t.TempDir(), "junk.spine")
	if err := os.WriteFile(junk, []byte("not a spine"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "disk.img")
	if err := provision.Create(provision.Options{Out: out, A: junk, Seed: t.Name(), Unchecked: true,
		ESP: []fat.File{{Path: provision.BootProgramPath, Data: program}}}); err != nil {
		t.Fatalf("create disk: %v", err)
	}
	return out
}

// firmwareMachine boots disk through OVMF with Secure Boot on and the owner's keys, nothing
// else attached. The variable store is copied: the firmware writes to it.
func firmwareMachine(t *testing.T, disk string) vm.Config {
	t.Helper()
	u := uefiFx(t)
	vars := filepath.Join(t.TempDir(), "vars.fd")
	b, err := os.ReadFile(u.vars)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vars, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return vm.Config{Disk: disk, Firmware: &vm.Firmware{Code: ovmf.Code, Vars: vars}, Timeout: uefiTimeout, Accel: fx.accel}
}

// The owner's disk, written by spine disk with the boot program signed by the owner's key,
// starts under Secure Boot: the kernel's EFI stub runs and sees Secure Boot on.
func TestUEFISecureBootRunsOwnerSigned(t *testing.T) {
	t.Parallel()
	u := uefiFx(t)
	img := buildSpine(t, spineOpts{})
	disk := filepath.Join(t.TempDir(), "disk.img")
	pass := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(pass, []byte("owner passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := spineCLI("disk", "--a", img, "--out", disk, "--passphrase-file", pass, "--kdf", "test",
		"--boot-program", fx.kernel.Image,
		"--uefi-key", filepath.Join(u.owner, sbkeys.KeyFile), "--uefi-cert", filepath.Join(u.owner, sbkeys.CertFile)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	v := vmtest.Boot(t, firmwareMachine(t, disk))
	v.WaitFor(t, stubSecureBoot, uefiTimeout)
	t.Logf("firmware to the signed kernel's EFI stub: %s", time.Since(start).Round(time.Millisecond))
	v.Kill(t)
	v.Never(t, bdsFailed)
	v.Never(t, bdsNoBoot)
}

// A boot program the owner did not sign never runs: unsigned, or signed by another owner's key. The firmware
// refuses it, refuses its own shell, finds nothing else it may run, and stops at its "no
// bootable device" line (where OVMF waits for a key: firmware behaviour outside our chain).
//
// (A Debian-signed case, a real Secure Boot key this machine does not hold, went with the Debian
// kernel: Spine's own kernel replaced it and the e2e suite no longer fetches Debian's.)
func TestUEFISecureBootRefusesForeign(t *testing.T) {
	t.Parallel()
	u := uefiFx(t)
	unsigned, err := authenticode.Strip(u.kernel)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := sbkeys.Load(filepath.Join(u.stranger, sbkeys.KeyFile), filepath.Join(u.stranger, sbkeys.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	strangerSigned, err := authenticode.Sign(u.kernel, authenticode.Signer{Key: stranger.Key, Cert: stranger.Cert})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		program []byte
	}{
		{"unsigned", unsigned},
		{"stranger-signed", strangerSigned},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			v := vmtest.Boot(t, firmwareMachine(t, espDisk(t, c.program)))
			// The disk's boot option (OVMF names a virtio disk "UEFI Misc Device") is refused
			// for its signature; the firmware's own shell is refused after it.
			line := ""
			for !strings.Contains(line, "UEFI Misc Device") {
				line = v.WaitFor(t, bdsFailed, uefiTimeout)
			}
			if !strings.Contains(line, "Access Denied") && !strings.Contains(line, "Security Violation") {
				t.Errorf("the firmware failed the boot program for another reason: %q", line)
			}
			// The firmware's built-in UEFI shell, a debug entry point the owner never signed,
			// is refused the same way.
			shell := v.WaitFor(t, bdsFailed, uefiTimeout)
			if !strings.Contains(shell, "EFI Internal Shell") || !strings.Contains(shell, "Security Violation") {
				t.Errorf("next refusal is not the firmware shell's: %q", shell)
			}
			v.WaitFor(t, bdsNoBoot, uefiTimeout)
			v.Kill(t)
			v.Never(t, "EFI stub")
			v.Never(t, "UEFI Interactive Shell")
		})
	}
}
