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
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/keys"
	"alpinespine.org/spine/internal/host/cli"
	"alpinespine.org/spine/internal/host/kernel"
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
	_, err := spineOut(args...)
	return err
}

// spineOut runs the spine command line in process and returns what it printed on stdout.
func spineOut(args ...string) (string, error) {
	var out, errs bytes.Buffer
	code := cli.Run(context.Background(), args, &cli.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errs,
		Getenv: func(k string) string {
			if k == "SOURCE_DATE_EPOCH" {
				return "1767225600"
			}
			return ""
		}})
	if code != 0 {
		return "", &cliError{args: args, out: out.String() + errs.String()}
	}
	return out.String(), nil
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

// nextKernelVersion makes the kernel an update ships in these tests: Spine's kernel, same
// source and configuration, under a release of its own ("6.1.192-spine.2"), so its bytes and
// its uname -r differ. It has its own cache entry: a fresh machine builds it once (the few
// objects that print the release, and the links), later runs find it built.
const nextKernelVersion = ".2"

var nextKernelOnce = sync.OnceValues(func() (kernel.Kernel, error) {
	cache, err := kernel.DefaultCacheDir()
	if err != nil {
		return kernel.Kernel{}, err
	}
	return kernel.Build(context.Background(), cache, kernel.Options{ExtraVersion: nextKernelVersion, Log: os.Stderr})
})

func nextKernel(t *testing.T) kernel.Kernel {
	t.Helper()
	start := time.Now()
	k, err := nextKernelOnce()
	if err != nil {
		t.Fatalf("the update's kernel: %v", err)
	}
	t.Logf("the update's kernel %s: %s (built, or found in the cache)", k.Release, time.Since(start).Round(time.Millisecond))
	if k.SHA256 == fx.kernel.SHA256 || k.Release == fx.kernel.Release {
		t.Fatalf("the update's kernel is not another kernel: %s %s, Spine's %s %s", k.Release, k.SHA256, fx.kernel.Release, fx.kernel.SHA256)
	}
	return k
}

// ctlStatus asks the machine for its status as an operator does, with spine ctl status (the
// JSON form, and the text form's kernel line), and checks which slot and kernel it runs.
func ctlStatus(t *testing.T, sock, slot string, k kernel.Kernel) control.StatusInfo {
	t.Helper()
	out, err := spineOut("ctl", "--socket", sock, "--json", "status")
	if err != nil {
		t.Fatal(err)
	}
	var st control.StatusInfo
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("spine ctl --json status: %v: %s", err, out)
	}
	if st.Slot != slot || st.Kernel.Release != k.Release || st.Kernel.SHA256 != k.SHA256 || !strings.HasPrefix(st.Kernel.Version, "#1 SMP ") {
		t.Errorf("status says slot %s, kernel %+v; want slot %s, kernel %s sha256 %s", st.Slot, st.Kernel, slot, k.Release, k.SHA256)
	}
	text, err := spineOut("ctl", "--socket", sock, "status")
	if err != nil {
		t.Fatal(err)
	}
	if line := "kernel:       " + k.Release + " (" + st.Kernel.Version + "), the slot's, sha256 " + k.SHA256; !strings.Contains(text, line+"\n") {
		t.Errorf("spine ctl status lacks %q:\n%s", line, text)
	}
	return st
}

// An update whose Spine carries another kernel (Article VI §1: an update replaces the Spine,
// its kernel included) boots under that kernel: stage 0 starts it for the trial and spine ctl
// status shows it. The trial is rebooted before it commits, so the boot law reverts: the
// machine comes back on slot a under slot a's kernel, which status shows again.
func TestUEFIKernelUpdateReverts(t *testing.T) {
	t.Parallel()
	next, old := nextKernel(t), fx.kernel
	v1 := buildSpine(t, spineOpts{kernel: true, governor: quickHealth})
	// A health window the test never waits out: the trial is still uncommitted when it reboots.
	v2 := buildSpine(t, spineOpts{version: 2, kern: &next, governor: `health_window = "30m"`})
	disk := ownerDisk(t, v1, "")
	stageOffline(t, disk, v2)
	cfg, sock := withControl(t, answering(firmwareMachine(t, disk)))
	cfg.MaxBoots = 2
	cfg.Timeout = 3 * uefiTimeout
	start := time.Now()
	v := vmtest.Boot(t, cfg)
	v.WaitEvent(t, event.SlotTry, uefiTimeout, kv("slot", "b"), kv("state", "trial"), kv("tries_left", "0"))
	v.WaitEvent(t, event.KernelStart, bootTimeout, kv("slot", "b"), kv("release", next.Release), kv("sha256", next.SHA256))
	waitUp(t, v, "tiny", 2, "b", bootTimeout)
	if st := ctlStatus(t, sock, "b", next); st.Committed || st.Slots[1].State != "trial" {
		t.Errorf("the trial before its reboot: committed %v, slot b %+v", st.Committed, st.Slots[1])
	}
	if err := spineCLI("ctl", "--socket", sock, "reboot"); err != nil {
		t.Fatal(err)
	}
	wantContains(t, v.WaitEvent(t, event.Halt, bootTimeout, kv("action", "reboot")), "reason", "operator asked")
	// Stage 0 again: the trial used its one try, so slot a boots, under its own kernel.
	v.WaitEvent(t, event.Stage1Start, uefiTimeout, kv("role", "stage0"))
	v.WaitEvent(t, event.KernelStart, bootTimeout, kv("slot", "a"), kv("release", old.Release), kv("sha256", old.SHA256))
	waitUp(t, v, "tiny", 1, "a", bootTimeout)
	// Slot a is committed again: primary, and the record's last-known-good Spine.
	v.WaitEvent(t, event.Committed, bootTimeout, kv("slot", "a"))
	st := ctlStatus(t, sock, "a", old)
	if st.Slots[1].State != "bad" || !strings.Contains(st.Slots[1].Reason, bootctl.ReasonOutOfTries) {
		t.Errorf("slot b after its trial was rebooted: %+v", st.Slots[1])
	}
	v.Kill(t)
	t.Logf("two firmware boots, the update's kernel then the old one: %s", time.Since(start).Round(time.Millisecond))
	// The kernels' own banners: one boot under each (stage 0's is quiet).
	for _, k := range []kernel.Kernel{next, old} {
		if n := v.Count("Linux version " + k.Release + " "); n != 1 {
			t.Errorf("the console shows %d boots of kernel %s, want 1", n, k.Release)
		}
	}
	if n := len(v.Events(event.Committed, kv("slot", "b"))); n != 0 {
		t.Errorf("the trial committed %d times", n)
	}
	rec := record(t, disk)
	if rec.Primary != 0 || rec.Slots[0].State != bootctl.Good || rec.Slots[0].Version != 1 || rec.Slots[1].State != bootctl.Bad {
		t.Errorf("record after the revert: %+v", rec)
	}
}

// bay0 crashing reboots the machine under firmware boot with nothing added by the harness
// (Article II §3): no command line reaches a firmware boot, so the fault is linked into the
// trial Spine's bay0 (a test build) and the disk carries it. Before the watchdog is armed
// (slot b's bay0, first thing under its own kernel) nothing but the kernel can reboot: its
// built-in panic timeout does. After it (the governor, up), the kernel's panic reboots as well,
// before the watchdog would. Either way bay0 never halts by itself, and the boot law goes on:
// the trial used its try, so slot a boots.
func TestUEFIBay0CrashReboots(t *testing.T) {
	t.Parallel()
	v1 := buildSpine(t, spineOpts{kernel: true, governor: quickHealth})
	for _, c := range []struct{ name, kind string }{
		{"before-watchdog", "crash-stage1"},
		{"after-watchdog", "crash-main"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			disk := ownerDisk(t, v1, "")
			stageOffline(t, disk, buildSpine(t, spineOpts{version: 2, kernel: true, fault: c.kind}))
			cfg := answering(firmwareMachine(t, disk))
			// No pvpanic device: a kernel panic resets the machine as on hardware.
			cfg.PanicReboots = true
			cfg.MaxBoots = 2
			cfg.Timeout = 3 * uefiTimeout
			start := time.Now()
			v := vmtest.Boot(t, cfg)
			v.WaitEvent(t, event.SlotTry, uefiTimeout, kv("slot", "b"), kv("state", "trial"), kv("tries_left", "0"))
			v.WaitEvent(t, event.KernelStart, bootTimeout, kv("slot", "b"))
			v.WaitEvent(t, event.Stage1Start, bootTimeout, kv("role", "slot b"))
			if c.kind == "crash-main" {
				v.WaitEvent(t, event.WatchdogArmed, bootTimeout)
				waitUp(t, v, "tiny", 2, "b", bootTimeout)
			}
			v.WaitEvent(t, event.FaultFired, bootTimeout, kv("kind", c.kind))
			crashed := time.Now()
			v.WaitFor(t, "Kernel panic - not syncing: Attempted to kill init!", bootTimeout)
			v.WaitEvent(t, event.Stage1Start, uefiTimeout, kv("role", "stage0"))
			t.Logf("firmware again %s after the crash", time.Since(crashed).Round(time.Millisecond))
			v.WaitEvent(t, event.KernelStart, bootTimeout, kv("slot", "a"))
			if c.kind == "crash-main" {
				// The governor that crashed had marked its boot unclean; no halt cleared that, so
				// the next boot says the last one ended without a word. (Before the watchdog, no
				// governor ran: slot b's spent try is the record's account.)
				wantContains(t, v.WaitEvent(t, event.LastReset, bootTimeout), "reason", "unclean")
			}
			waitUp(t, v, "tiny", 1, "a", bootTimeout)
			v.WaitEvent(t, event.Committed, bootTimeout, kv("slot", "a"))
			v.Kill(t)
			t.Logf("trial, crash, reboot, slot a up: %s", time.Since(start).Round(time.Millisecond))
			// The reboot was the kernel's: bay0 neither halted nor was its watchdog starved.
			v.NeverEvent(t, event.Halt)
			v.NeverEvent(t, event.WatchdogStarving)
			// Only the governors arm (adopt) the watchdog: slot a's, and slot b's if it got that far.
			want := map[string]int{"crash-stage1": 1, "crash-main": 2}[c.kind]
			if n := len(v.Events(event.WatchdogArmed)); n != want {
				t.Errorf("%d governors armed the watchdog, want %d", n, want)
			}
			rec := record(t, disk)
			if rec.Primary != 0 || rec.Slots[0].State != bootctl.Good || rec.Slots[1].State != bootctl.Bad ||
				!strings.Contains(rec.Slots[1].Reason, bootctl.ReasonOutOfTries) {
				t.Errorf("record after the crashed trial: %+v", rec)
			}
		})
	}
}
