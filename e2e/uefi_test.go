//go:build e2e

package e2e

// UEFI Secure Boot with the owner's keys (Article I §2.4: verified cryptographically at boot,
// from the first instruction read from the disk). The machine boots through OVMF with Secure
// Boot on and nothing from the host but the disk: the firmware runs the boot program on the
// EFI system partition only if the owner's key signed it.
//
// The boot program is stage 0: Spine's kernel with bay0 and the trusted keys built in, signed
// with the owner's key by spine disk. It applies the boot law and starts the chosen slot's own
// kernel (kexec), which the slot's signed manifest covers.

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/keys"
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

// ownerDisk writes the disk an owner makes with spine disk: slots a and b, /persist, and
// stage 0 built from Spine's kernel, bay0 and the trusted key, signed with the owner's key.
func ownerDisk(t *testing.T, a, b string) string {
	t.Helper()
	u := uefiFx(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	pass := filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte(e2ePassphrase+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"disk", "--a", a, "--out", disk, "--passphrase-file", pass, "--kdf", "test",
		"--pub", filepath.Join(fx.dir, "keys0", keys.PublicFile), "--bay0", fx.bay0,
		"--uefi-key", filepath.Join(u.owner, sbkeys.KeyFile), "--uefi-cert", filepath.Join(u.owner, sbkeys.CertFile)}
	if b != "" {
		args = append(args, "--b", b)
	}
	start := time.Now()
	if err := spineCLI(args...); err != nil {
		t.Fatal(err)
	}
	t.Logf("spine disk with stage 0: %s", time.Since(start).Round(time.Millisecond))
	return disk
}

// The owner's disk boots by itself: OVMF with Secure Boot on runs stage 0 (signed by the owner),
// stage 0 applies the boot law, verifies slot a and starts slot a's own kernel, whose bay0
// verifies the slot again and brings the Spine up. Nothing comes from the host but the disk.
func TestUEFIDiskBootsByItself(t *testing.T) {
	t.Parallel()
	img := buildSpine(t, spineOpts{kernel: true})
	disk := ownerDisk(t, img, img)
	start := time.Now()
	v := vmtest.Boot(t, answering(firmwareMachine(t, disk)))
	v.WaitEvent(t, event.Stage1Start, uefiTimeout, kv("role", "stage0"))
	t.Logf("firmware to stage 0: %s", time.Since(start).Round(time.Millisecond))
	ks := v.WaitEvent(t, event.KernelStart, uefiTimeout, kv("slot", "a"), kv("release", fx.kernel.Release))
	if ks.Value("sha256") != fx.kernel.SHA256 {
		t.Errorf("stage 0 started a kernel with sha256 %s, want Spine's %s", ks.Value("sha256"), fx.kernel.SHA256)
	}
	v.WaitEvent(t, event.Stage1Start, bootTimeout, kv("role", "slot a"))
	// The kexec that brought this kernel is closed before anything else runs.
	v.WaitEvent(t, event.KexecDisabled, bootTimeout)
	waitUp(t, v, "tiny", 1, "a", bootTimeout)
	t.Logf("firmware to slot a up: %s", time.Since(start).Round(time.Millisecond))
	v.Kill(t)
	// The slot kernel printed the one kernel boot log of this boot: stage 0's is quiet.
	if n := v.Count("Linux version " + fx.kernel.Release); n != 1 {
		t.Errorf("the console shows %d kernel boot logs, want 1 (the slot kernel's)", n)
	}
	v.Never(t, bdsFailed)
	v.Never(t, bdsNoBoot)
	v.NeverEvent(t, event.SlotFailed)
}

// A flipped byte in the kernel slot a carries fails slot a in stage 0 (its verification
// covers every block of the Spine, the kernel included) and the machine comes up on slot b,
// under slot b's kernel; the record says why slot a is bad.
func TestUEFIDamagedKernelFallsBack(t *testing.T) {
	t.Parallel()
	img := buildSpine(t, spineOpts{kernel: true})
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	kern, err := os.ReadFile(fx.kernel.Image)
	if err != nil {
		t.Fatal(err)
	}
	// The bzImage is compressed already, so SquashFS stores its blocks as they are: find a
	// piece from its middle in the image and flip a byte there.
	mid := len(kern) / 2
	at := bytes.Index(b, kern[mid:mid+64])
	if at < 0 {
		t.Fatal("the kernel's bytes are not stored as they are in the image")
	}
	b[at+32] ^= 0x01
	disk := ownerDisk(t, img, img)
	// Slot a gets the damaged copy; the record keeps the good image's size and version.
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	part, err := provision.Partition(f, provision.SlotPartition(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, part.Start); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	v := vmtest.Boot(t, answering(firmwareMachine(t, disk)))
	failed := v.WaitEvent(t, event.SlotFailed, uefiTimeout, kv("slot", "a"))
	if !strings.Contains(failed.Value("reason"), "verification") {
		t.Errorf("slot a failed for another reason: %q", failed.Value("reason"))
	}
	v.WaitEvent(t, event.KernelStart, bootTimeout, kv("slot", "b"))
	v.WaitEvent(t, event.Stage1Start, bootTimeout, kv("role", "slot b"))
	waitUp(t, v, "tiny", 1, "b", bootTimeout)
	v.Kill(t)
	if got := len(v.Events(event.KernelStart, kv("slot", "a"))); got != 0 {
		t.Errorf("stage 0 started slot a's damaged kernel %d times", got)
	}
	rec := record(t, disk)
	if rec.Slots[0].State != bootctl.Bad {
		t.Errorf("slot a after its kernel failed verification: %+v", rec.Slots[0])
	}
}

// With both slots damaged, stage 0 fails each in turn, prints every reason and powers the
// machine off: the boot law's last step under firmware boot, with nothing from the host.
func TestUEFIBothSlotsDamagedPowersOff(t *testing.T) {
	t.Parallel()
	img := buildSpine(t, spineOpts{kernel: true})
	disk := ownerDisk(t, img, img)
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for slot := range 2 {
		part, err := provision.Partition(f, provision.SlotPartition(slot))
		if err != nil {
			t.Fatal(err)
		}
		// A byte of the first data block, which holds the SquashFS superblock.
		var b [1]byte
		if _, err := f.ReadAt(b[:], part.Start+100); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0x01
		if _, err := f.WriteAt(b[:], part.Start+100); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	v := vmtest.Boot(t, answering(firmwareMachine(t, disk)))
	for _, slot := range []string{"a", "b"} {
		v.WaitEvent(t, event.SlotFailed, uefiTimeout, kv("slot", slot))
	}
	v.WaitEvent(t, event.NoBoot, bootTimeout)
	v.ExpectOutcome(t, vm.PoweredOff)
	v.NeverEvent(t, event.KernelStart)
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
