//go:build e2e

package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/stage1"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/host/provision"
	"alpinespine.org/spine/internal/host/vm"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// Article V §1 (A -> B -> poweroff) and Article I §2.4 (verified cryptographically at boot).

const bootTimeout = 90 * time.Second

// makeDisk lays out a machine disk with images in A and B ("" = empty) and the shared persist
// container (see writePersist), and lets the test edit the first boot-control record.
func makeDisk(t *testing.T, a, b string, edit func(*bootctl.Record)) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "disk.img")
	if err := provision.Create(provision.Options{Out: out, A: a, B: b, PersistSize: persistSize, Seed: t.Name(), Unchecked: true}); err != nil {
		t.Fatalf("create disk: %v", err)
	}
	writePersist(t, out)
	if edit != nil {
		rec, err := provision.Record(out)
		if err != nil {
			t.Fatal(err)
		}
		edit(&rec)
		f, err := os.OpenFile(out, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		state, err := provision.Partition(f, provision.StatePartition)
		if err != nil {
			t.Fatal(err)
		}
		if err := provision.WriteRecord(f, state, rec); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// machine returns the VM configuration that boots a disk with the shared kernel and initramfs;
// the console answers every /persist prompt with the shared passphrase.
func machine(disk string) vm.Config {
	return answering(vm.Config{Kernel: fx.kernel.Vmlinux, Initrd: fx.initrd, Disk: disk, Timeout: bootTimeout, Accel: fx.accel})
}

// damaged copies an image and flips one byte at off (negative: from the end).
func damaged(t *testing.T, img string, off int64) string {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off += int64(len(b))
	}
	b[off] ^= 0x5a
	out := filepath.Join(t.TempDir(), "damaged.spine")
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

func footer(t *testing.T, img string) image.Footer {
	t.Helper()
	im, f, err := image.OpenFile(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return im.Footer
}

func record(t *testing.T, disk string) bootctl.Record {
	t.Helper()
	rec, err := provision.Record(disk)
	if err != nil {
		t.Fatalf("read boot-control record after the boot: %v", err)
	}
	return rec
}

func TestBootGoodSlotA(t *testing.T) {
	t.Parallel()
	img := buildSpine(t, spineOpts{})
	disk := makeDisk(t, img, img, nil)
	v := vmtest.Boot(t, machine(disk))
	// No reboot, sync or remount key on the serial line (Article V §2): Spine's kernel is built
	// without SysRq, so stage 1 finds no switch to turn off and reports it absent.
	if e := v.WaitEvent(t, event.SysRq, bootTimeout); e.Value("value") != "absent" {
		t.Errorf("kernel.sysrq is %q, want absent (Spine's kernel has no SysRq)", e.Value("value"))
	}
	v.WaitEvent(t, event.SlotTry, bootTimeout, kv("slot", "a"))
	waitUp(t, v, "tiny", 1, "a", bootTimeout)
	v.Kill(t)
	// The Spine's bay0 is the initramfs's (the signed manifest's bay0_sha256 says so): stage 1
	// governs without starting the same program again. (A Spine with another bay0, as in the
	// fault-injection tests, has it exec'd: those tests need its faults to fire.)
	if !v.Saw("bay0: stage1: /bin/bay0 of the Spine is this bay0") {
		t.Error("stage 1 started the Spine's bay0 again although it is the same binary")
	}
	v.NeverEvent(t, event.SlotTry, kv("slot", "b"))
	v.NeverEvent(t, event.SlotFailed)
	rec := record(t, disk)
	if rec.Slots[0].State != bootctl.Good || rec.Slots[1].State != bootctl.Good {
		t.Fatalf("record after a good boot: %+v", rec)
	}
}

// TestBootFallsBackOnDamage damages slot A in every part of the image in turn: the machine must
// come up on B and A must be marked bad with the reason.
func TestBootFallsBackOnDamage(t *testing.T) {
	t.Parallel()
	good := buildSpine(t, spineOpts{})
	ft := footer(t, good)
	untrusted := buildSpine(t, spineOpts{key: fx.otherKey})
	cases := []struct {
		name   string
		img    string
		edit   func(*bootctl.Record)
		reason string
	}{
		{"data", damaged(t, good, 4096*3+17), nil, "eager verification"},
		{"hash-tree", damaged(t, good, int64(ft.HashOffset)+4096+33), nil, "eager verification"},
		{"manifest", damaged(t, good, int64(ft.ManifestOffset)+10), nil, "signature"},
		{"signature", damaged(t, good, int64(ft.ManifestOffset)+int64(ft.ManifestSize)+5), nil, "signature"},
		{"footer", damaged(t, good, -30), nil, "footer"},
		{"untrusted-key", untrusted, nil, "trusted key"},
		{"rollback", good, func(r *bootctl.Record) { r.MinVersion = 2; r.Slots[1].Version = 2 }, "older than min_version"},
	}
	newer := buildSpine(t, spineOpts{version: 2})
	for _, c := range cases {
		c := c
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := good
			if c.name == "rollback" {
				b = newer
			}
			disk := makeDisk(t, c.img, b, c.edit)
			v := vmtest.Boot(t, machine(disk))
			wantContains(t, v.WaitEvent(t, event.SlotFailed, bootTimeout, kv("slot", "a")), "reason", c.reason)
			v.WaitEvent(t, event.SlotUp, bootTimeout, kv("slot", "b"))
			v.Kill(t)
			rec := record(t, disk)
			if rec.Slots[0].State != bootctl.Bad || !strings.Contains(rec.Slots[0].Reason, c.reason) {
				t.Errorf("slot a after the boot: %+v, want bad with %q", rec.Slots[0], c.reason)
			}
			if rec.Slots[1].State != bootctl.Good {
				t.Errorf("slot b after the boot: %+v, want good", rec.Slots[1])
			}
		})
	}
}

// TestEagerVerification damages a block of a file that nothing reads: lazy verification would
// never see it, so only reading the whole device at boot can catch it.
func TestEagerVerification(t *testing.T) {
	t.Parallel()
	good := buildSpine(t, spineOpts{})
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	off := bytes.Index(b, fx.unusedPattern)
	if off < 0 || bytes.Index(b[off+1:], fx.unusedPattern) >= 0 {
		t.Fatalf("the unused file's bytes are not stored verbatim exactly once in the image (index %d)", off)
	}
	disk := makeDisk(t, damaged(t, good, int64(off)+7), good, nil)
	v := vmtest.Boot(t, machine(disk))
	wantContains(t, v.WaitEvent(t, event.SlotFailed, bootTimeout, kv("slot", "a")), "reason", "eager verification")
	v.WaitEvent(t, event.SlotUp, bootTimeout, kv("slot", "b"))
	v.Kill(t)
}

func TestBothSlotsBadPowersOff(t *testing.T) {
	t.Parallel()
	good := buildSpine(t, spineOpts{})
	ft := footer(t, good)
	disk := makeDisk(t, damaged(t, good, 5000), damaged(t, good, int64(ft.ManifestOffset)+3), nil)
	v := vmtest.Boot(t, machine(disk))
	v.ExpectOutcome(t, vm.PoweredOff)
	for _, want := range []string{"slot a", "slot b", "eager verification", "signature"} {
		if !sawEvent(v, event.NoBoot, "reason", want) {
			t.Errorf("no no-boot event mentions %q", want)
		}
	}
	if len(v.Events(event.Halt, kv("action", "poweroff"))) != 1 {
		t.Error("bay0 never said it powers off")
	}
	v.NeverEvent(t, event.SlotUp)
}

func TestEmptyBAndBadAPowersOff(t *testing.T) {
	t.Parallel()
	good := buildSpine(t, spineOpts{})
	disk := makeDisk(t, damaged(t, good, 9000), "", nil)
	v := vmtest.Boot(t, machine(disk))
	v.ExpectOutcome(t, vm.PoweredOff)
	for _, want := range []string{"slot a", "slot b: empty"} {
		if !sawEvent(v, event.NoBoot, "reason", want) {
			t.Errorf("no no-boot event mentions %q", want)
		}
	}
	if len(v.Events(event.Halt, kv("action", "poweroff"))) != 1 {
		t.Error("bay0 never said it powers off")
	}
}

// TestTrialRunsOutOfTries boots a trial slot whose bay0 dies before the governor: each boot
// uses up one try (written before the try), and then the machine comes up on the other slot.
func TestTrialRunsOutOfTries(t *testing.T) {
	t.Parallel()
	crash := filepath.Join(t.TempDir(), "crashbay0")
	if err := goBuild(crash, "./e2e/testdata/crashbay0"); err != nil {
		t.Fatal(err)
	}
	bad := buildSpine(t, spineOpts{name: "crashy", version: 2, bay0: crash})
	good := buildSpine(t, spineOpts{})
	const tries = 2
	disk := makeDisk(t, bad, good, func(r *bootctl.Record) {
		r.Slots[0].State, r.Slots[0].TriesLeft = bootctl.Trial, tries
	})
	cfg := machine(disk)
	cfg.PanicReboots = true
	cfg.MaxBoots = tries + 2
	v := vmtest.Boot(t, cfg)
	waitUp(t, v, "tiny", 1, "b", 3*bootTimeout)
	v.Kill(t)
	if n := len(v.Events(event.SlotTry, kv("slot", "a"))); n != tries {
		t.Errorf("slot a was tried %d times, want exactly %d", n, tries)
	}
	rec := record(t, disk)
	if rec.Slots[0].State != bootctl.Bad || rec.Slots[0].TriesLeft != 0 {
		t.Errorf("slot a after running out of tries: %+v", rec.Slots[0])
	}
}

// TestDoorParametersIgnored passes every kernel parameter that opens a door on other systems;
// bay0 obeys none of them and the machine boots as usual, with no shell anywhere.
func TestDoorParametersIgnored(t *testing.T) {
	t.Parallel()
	img := buildSpine(t, spineOpts{})
	disk := makeDisk(t, img, img, nil)
	cfg := machine(disk)
	cfg.Cmdline = "init=/bin/sh single emergency rd.break rescue systemd.unit=emergency.target 1 S"
	v := vmtest.Boot(t, cfg)
	waitUp(t, v, "tiny", 1, "a", bootTimeout)
	v.Kill(t)
	if !v.Saw("Run /init as init process") {
		t.Error("the kernel did not run the initramfs's /init (bay0)")
	}
	v.Never(t, "Run /bin/sh")
	v.Never(t, "emergency mode")
}

// TestStage1HangResetsAndTrialFallsBack (Article II §3, Article VI §2): stage 1 arms the
// watchdog before it touches the record; hung right after writing a trial's try, it stops
// feeding, the hardware resets the machine within its timeout plus stage 1's window, and the
// next boot finds the trial out of tries and boots the other slot. No outside power cycle.
func TestStage1HangResetsAndTrialFallsBack(t *testing.T) {
	t.Parallel()
	trial := buildSpine(t, spineOpts{version: 2})
	good := buildSpine(t, spineOpts{})
	disk := makeDisk(t, trial, good, func(r *bootctl.Record) {
		r.Slots[0].State, r.Slots[0].TriesLeft = bootctl.Trial, 1
	})
	cfg := machine(disk)
	cfg.Initrd = faultInitrd(t)
	cfg.Cmdline = "bay0.fault=hang-stage1-a"
	cfg.MaxBoots = 2
	cfg.Timeout = 3 * bootTimeout
	v := vmtest.Boot(t, cfg)
	v.WaitEvent(t, event.SysRq, bootTimeout, kv("value", "absent"))
	v.WaitEvent(t, event.FaultFired, bootTimeout, kv("kind", "hang-stage1-a"))
	hung := time.Now()
	wantContains(t, v.WaitEvent(t, event.WatchdogStarving, bootTimeout), "reason", "stage1 silent")
	v.WaitBoot(t, bootTimeout)
	resetWithin(t, time.Since(hung), stage1.WatchdogTimeout+stage1.Window)
	v.WaitEvent(t, event.SlotTry, bootTimeout, kv("slot", "b"))
	waitUp(t, v, "tiny", 1, "b", bootTimeout)
	v.Kill(t)
	if n := len(v.Events(event.SlotTry, kv("slot", "a"))); n != 1 {
		t.Errorf("the hung trial was tried %d times, want once", n)
	}
	rec := record(t, disk)
	if rec.Slots[0].State != bootctl.Bad || rec.Slots[0].Reason != bootctl.ReasonOutOfTries {
		t.Errorf("slot a after its hung trial: %+v", rec.Slots[0])
	}
}

// resetWithin fails the test if a reset took longer than the watchdog's promise (timeout plus
// the window in which a stuck loop is noticed) plus 5 s, and a TCG allowance of 10 s more.
func resetWithin(t *testing.T, took, promise time.Duration) {
	t.Helper()
	t.Logf("figure: reset %s after the hang (promise %s + 5s)", took.Round(100*time.Millisecond), promise)
	if limit := promise + 5*time.Second + 10*time.Second; took > limit {
		t.Errorf("the machine reset %s after the hang, want within %s", took.Round(100*time.Millisecond), limit)
	}
}

// TestCommittedSpineThatKeepsDyingFallsBack (Article II §3, Article VI §2): a Spine that
// commits and then dies at run time, boot after boot, is given up after the policy's
// reset_limit and the last-known-good Spine in the other slot boots.
func TestCommittedSpineThatKeepsDyingFallsBack(t *testing.T) {
	t.Parallel()
	good := buildSpine(t, spineOpts{})
	dying := buildSpine(t, spineOpts{version: 2, faulty: true, governor: quickHealth + "\nreset_limit = 1"})
	disk := makeDisk(t, good, dying, func(r *bootctl.Record) {
		r.Primary = 1
		r.Slots[1].State, r.Slots[1].TriesLeft = bootctl.Trial, 1
	})
	cfg := machine(disk)
	cfg.Cmdline = "bay0.fault=panic-after-commit"
	cfg.MaxBoots = 4
	cfg.Timeout = 6 * bootTimeout
	v := vmtest.Boot(t, cfg)
	waitUp(t, v, "tiny", 2, "b", bootTimeout)
	v.WaitEvent(t, event.Committed, bootTimeout, kv("slot", "b"), kv("version", "2"))
	wantContains(t, v.WaitEvent(t, event.Halt, bootTimeout, kv("action", "reboot")), "reason", "dies after its commit")
	// Boot 2: good now, its one reset in a row is spent; it dies again.
	waitUp(t, v, "tiny", 2, "b", bootTimeout)
	v.WaitEvent(t, event.Halt, bootTimeout, kv("action", "reboot"))
	// Boot 3: given up, the last-known-good Spine boots.
	v.WaitEvent(t, event.Stage1Start, bootTimeout)
	v.WaitEvent(t, event.SlotTry, bootTimeout, kv("slot", "a"))
	waitUp(t, v, "tiny", 1, "a", bootTimeout)
	v.WaitEvent(t, event.Committed, bootTimeout, kv("slot", "a"))
	v.Kill(t)
	rec := record(t, disk)
	if rec.Slots[1].State != bootctl.Bad || !strings.Contains(rec.Slots[1].Reason, bootctl.ReasonResetLoop) || rec.Primary != 0 {
		t.Errorf("record after the reset loop: %+v", rec)
	}
}
