//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/provision"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// Proofs of clauses that no other scenario asserts on the machine itself: the forbidden
// amendments (Article IX §2), no network dependency (Article I §2) and the automatic revert of
// a trial that fails verification (Article VI §2).

// TestForcedSpineRefusedAtBoot signs a Spine past the builder's audit (a shell and a second init
// outside every persona tree, writable configuration, user data, a workload outside the persona
// trees, a package manager inside one): stage 1 refuses it like a damaged one,
// marks the slot bad and boots the other slot. A signature says who built a Spine, not that it
// obeys the constitution.
func TestForcedSpineRefusedAtBoot(t *testing.T) {
	t.Parallel()
	forced := buildSpine(t, spineOpts{name: "forced", force: map[string][]byte{
		"bin/sh":          []byte("#!/bin/sh\n"),
		"sbin/init":       []byte("\x7fELF"),
		"etc/spine/extra": []byte("writable=yes\n"),
		// user data, a user workload outside every persona, and a package manager in a persona
		"home/alice/notes.txt":          []byte("mine\n"),
		"srv/app/server":                []byte("\x7fELF"),
		"personas/idle/usr/bin/apt-get": []byte("\x7fELF"),
	}})
	good := buildSpine(t, spineOpts{})
	disk := makeDisk(t, forced, good, nil)
	v := vmtest.Boot(t, machine(disk))
	failed := v.WaitEvent(t, event.SlotFailed, bootTimeout, kv("slot", "a"))
	for _, why := range []string{"breaks the constitution", "/bin/sh: shell outside a persona tree", "/sbin/init: another init",
		"/etc/spine/extra: writable configuration", "/home/alice/notes.txt: writable configuration or state path",
		"/srv/app/server: writable configuration or state path", "/personas/idle/usr/bin/apt-get: package manager"} {
		wantContains(t, failed, "reason", why)
	}
	waitUp(t, v, "tiny", 1, "b", bootTimeout)
	v.Kill(t)
	v.NeverEvent(t, event.SlotUp, kv("slot", "a"))
	if rec := record(t, disk); rec.Slots[0].State != bootctl.Bad {
		t.Errorf("slot a after refusing a forced Spine: %+v, want bad", rec.Slots[0])
	}
}

// TestNoNetworkDependency boots with a network card whose network reaches nothing (QEMU's user
// network with restrict=on: no address answers): the trial still comes up, runs its personas
// and commits. Nothing on the boot path waits for a network. The same boot shows that the Spine
// does not update itself: with no operator on the control line, the other slot and its record
// entry are exactly as they were before the boot.
func TestNoNetworkDependency(t *testing.T) {
	t.Parallel()
	img := buildSpine(t, spineOpts{governor: quickHealth})
	disk := makeDisk(t, img, img, func(r *bootctl.Record) {
		r.Slots[0].State, r.Slots[0].TriesLeft = bootctl.Trial, 1
	})
	before := record(t, disk)
	cfg := machine(disk)
	cfg.Net = true
	v := vmtest.Boot(t, cfg)
	waitUp(t, v, "tiny", 1, "a", bootTimeout)
	v.WaitEvent(t, event.PersonasUp, bootTimeout)
	v.WaitEvent(t, event.Committed, bootTimeout, kv("slot", "a"))
	v.Kill(t)
	rec := record(t, disk)
	if rec.Slots[0].State != bootctl.Good {
		t.Errorf("slot a after a boot with a dead network: %+v, want good", rec.Slots[0])
	}
	if rec.Slots[1] != before.Slots[1] || rec.Primary != before.Primary {
		t.Errorf("with no operator, the record's other slot or primary changed: %+v, was %+v", rec, before)
	}
	wantSlotHolds(t, disk, "spine-b", img)
}

// TestTrialFailingVerificationReverts: an update staged into slot B whose image is damaged where
// only verification sees it. On the next boot the trial fails eager verification, is marked bad,
// and the machine comes back on the last-known-good slot A by itself.
func TestTrialFailingVerificationReverts(t *testing.T) {
	t.Parallel()
	v1 := buildSpine(t, spineOpts{})
	v2 := damaged(t, buildSpine(t, spineOpts{version: 2}), 5000)
	disk := makeDisk(t, v1, v2, func(r *bootctl.Record) {
		r.Primary = 1
		r.Slots[1].State, r.Slots[1].TriesLeft, r.Slots[1].Version = bootctl.Trial, 1, 2
	})
	v := vmtest.Boot(t, machine(disk))
	v.WaitEvent(t, event.SlotTry, bootTimeout, kv("slot", "b"))
	wantContains(t, v.WaitEvent(t, event.SlotFailed, bootTimeout, kv("slot", "b")), "reason", "verification")
	waitUp(t, v, "tiny", 1, "a", bootTimeout)
	v.Kill(t)
	rec := record(t, disk)
	if rec.Slots[1].State != bootctl.Bad || rec.Slots[0].State != bootctl.Good {
		t.Errorf("record after the trial failed verification: %+v", rec)
	}
}

// TestSerialSysRqIsDead sends what a person at the serial line would send to reboot or crash
// a Linux machine through SysRq (a BREAK, then "b"; a BREAK, then "c"): nothing happens, the
// machine and its personas go on (no debug entry point, Article V §2).
func TestSerialSysRqIsDead(t *testing.T) {
	t.Parallel()
	img := buildSpine(t, spineOpts{})
	disk := makeDisk(t, img, img, nil)
	cfg := typing(disk)
	cfg.SerialBreak = true
	v := vmtest.Boot(t, cfg)
	answer(t, v, e2ePassphrase)
	waitUp(t, v, "tiny", 1, "a", bootTimeout)
	line := v.WaitPersona(t, "idle", "heartbeat ", bootTimeout)
	var n int
	if _, err := fmt.Sscanf(line[strings.Index(line, "heartbeat "):], "heartbeat %d", &n); err != nil {
		t.Fatalf("heartbeat line %q: %v", line, err)
	}
	for _, key := range []string{"b", "c"} {
		if err := v.Machine().Send("\x01b" + key); err != nil {
			t.Fatal(err)
		}
	}
	// Three more beats of the same instance: the machine neither rebooted nor crashed.
	v.WaitPersona(t, "idle", fmt.Sprintf("heartbeat %d ", n+3), bootTimeout)
	v.Kill(t)
	if got := len(v.Events(event.Stage1Start)); got != 1 {
		t.Errorf("stage 1 started %d times: the serial SysRq reached the kernel", got)
	}
	v.NeverEvent(t, event.Halt)
	v.Never(t, "sysrq: ")
}

// TestRuntimeVerityViolationResets damages, on the disk under a running machine, a block of a
// file that nothing has read yet, then has a persona read it: dm-verity refuses the block, the
// kernel resets the machine (restart_on_corruption), the next boot finds the slot damaged and
// comes up on the other one, and says why the last boot ended (Article I §3).
func TestRuntimeVerityViolationResets(t *testing.T) {
	t.Parallel()
	tree := t.TempDir()
	for _, f := range []struct{ src, dst string }{
		{filepath.Join(personaTree(t, "hog"), "bin", "hog"), filepath.Join(tree, "bin", "hog")},
		{filepath.Join(fx.dir, "tiny-tree", "unused.bin"), filepath.Join(tree, "unused.bin")},
	} {
		b, err := os.ReadFile(f.src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(f.dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.dst, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	img := buildPersonaSpine(t, fmt.Sprintf("[[persona]]\nname = \"reader\"\nexec = [\"/bin/hog\", \"readlater\", \"/unused.bin\"]\n"+
		"cpus = 0.2\nmemory = \"32MiB\"\npids = 8\ndata = true\nrestart = \"never\"\n[persona.source]\ndir = %q\n", tree))
	disk := makeDisk(t, img, img, nil)
	cfg, sock := withControl(t, machine(disk))
	cfg.MaxBoots = 2
	v := vmtest.Boot(t, cfg)
	waitUp(t, v, "personas", 1, "a", bootTimeout)
	v.WaitEvent(t, event.PersonaExited, bootTimeout, kv("name", "reader"))

	// Flip a byte of unused.bin inside slot a, on the disk the machine is running from.
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	part, err := provision.Partition(f, "spine-a")
	if err != nil {
		t.Fatal(err)
	}
	slot := make([]byte, part.Size)
	if _, err := f.ReadAt(slot, part.Start); err != nil {
		t.Fatal(err)
	}
	off := bytes.Index(slot, fx.unusedPattern)
	if off < 0 {
		t.Fatal("unused.bin's bytes are not in slot a")
	}
	if _, err := f.WriteAt([]byte{slot[off+7] ^ 0x5a}, part.Start+int64(off)+7); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	c := dial(t, sock)
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	_, _ = c.Call(ctx, control.Request{Verb: control.VerbStart, Name: "reader"})
	c.Close()
	v.WaitBoot(t, bootTimeout)
	wantContains(t, v.WaitEvent(t, event.SlotFailed, bootTimeout, kv("slot", "a")), "reason", "verification")
	wantContains(t, v.WaitEvent(t, event.LastReset, bootTimeout), "reason", "slot a damaged")
	waitUp(t, v, "personas", 1, "b", bootTimeout)
	v.Kill(t)
	v.NeverEvent(t, event.Halt)
	if rec := record(t, disk); rec.Slots[0].State != bootctl.Bad {
		t.Errorf("slot a after a runtime verity reset: %+v, want bad", rec.Slots[0])
	}
}
