//go:build e2e

package e2e

import (
	"crypto/ed25519"
	"path/filepath"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/provision"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// Article VI: updates replace the whole Spine in the inactive slot, are verified before
// activation, never touch the active Spine, and revert by themselves when the new Spine fails.

const quickHealth = `health_window = "3s"`

func stageOffline(t *testing.T, disk, img string) int {
	t.Helper()
	_, slot, err := provision.Stage(disk, img, []ed25519.PublicKey{fx.key.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatalf("stage %s: %v", filepath.Base(img), err)
	}
	return slot
}

func TestUpdateCommitsAfterHealthWindow(t *testing.T) {
	t.Parallel()
	v1 := buildSpine(t, spineOpts{governor: quickHealth})
	v2 := buildSpine(t, spineOpts{version: 2, governor: quickHealth})
	disk := makeDisk(t, v1, "", nil)
	if slot := stageOffline(t, disk, v2); slot != 1 {
		t.Fatalf("staged into slot %d, want b", slot)
	}
	rec := record(t, disk)
	if rec.Primary != 1 || rec.Slots[1].State != bootctl.Trial || rec.Slots[1].TriesLeft != 1 || rec.Slots[0].State != bootctl.Good {
		t.Fatalf("record after staging: %+v", rec)
	}
	v := vmtest.Boot(t, machine(disk))
	v.WaitEvent(t, event.SlotTry, bootTimeout, kv("slot", "b"), kv("state", "trial"), kv("tries_left", "0"))
	waitUp(t, v, "tiny", 2, "b", bootTimeout)
	v.WaitEvent(t, event.Committed, bootTimeout, kv("slot", "b"), kv("min_version", "1"))
	v.Kill(t)
	rec = record(t, disk)
	if rec.Primary != 1 || rec.Slots[1].State != bootctl.Good || rec.Slots[1].Version != 2 {
		t.Errorf("slot b after the commit: primary %d, %+v", rec.Primary, rec.Slots[1])
	}
	if rec.Slots[0].State != bootctl.Good || rec.Slots[0].Version != 1 {
		t.Errorf("slot a must stay the last-known-good Spine: %+v", rec.Slots[0])
	}
	if rec.MinVersion != 1 {
		t.Errorf("min_version %d, want 1: the floor rises to the last-known-good version", rec.MinVersion)
	}
	// A second update in a row writes the other slot, leaving the newest two.
	v3 := buildSpine(t, spineOpts{version: 3, governor: quickHealth})
	if slot := stageOffline(t, disk, v3); slot != 0 {
		t.Fatalf("second update staged into slot %d, want a", slot)
	}
	v = vmtest.Boot(t, machine(disk))
	waitUp(t, v, "tiny", 3, "a", bootTimeout)
	v.WaitEvent(t, event.Committed, bootTimeout, kv("slot", "a"), kv("min_version", "2"))
	v.Kill(t)
	rec = record(t, disk)
	if rec.Slots[0].Version != 3 || rec.Slots[1].Version != 2 || rec.MinVersion != 2 {
		t.Errorf("after two updates: %+v", rec)
	}
}

// TestBadUpdatesRevert stages Spines that fail in each way a new Spine can fail after it was
// accepted; each time the machine comes back on the last-known-good slot by itself.
func TestBadUpdatesRevert(t *testing.T) {
	t.Parallel()
	v1 := buildSpine(t, spineOpts{governor: quickHealth})
	crash := filepath.Join(t.TempDir(), "crashbay0")
	if err := goBuild(crash, "./e2e/testdata/crashbay0"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		img     func(t *testing.T) string
		cmdline string
	}{
		{"bay0-dies", func(t *testing.T) string { return buildSpine(t, spineOpts{name: "crashy", version: 2, bay0: crash}) }, ""},
		{"bay0-panics", func(t *testing.T) string {
			return buildSpine(t, spineOpts{version: 2, faulty: true, governor: quickHealth})
		}, "bay0.fault=panic"},
		{"governor-hangs", func(t *testing.T) string {
			return buildSpine(t, spineOpts{version: 2, faulty: true, governor: quickHealth + "\nwatchdog_timeout = \"2s\""})
		}, "bay0.fault=hang-main"},
	}
	for _, c := range cases {
		c := c
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			disk := makeDisk(t, v1, "", nil)
			stageOffline(t, disk, c.img(t))
			cfg := machine(disk)
			cfg.PanicReboots = true
			cfg.MaxBoots = 3
			cfg.Cmdline = c.cmdline
			v := vmtest.Boot(t, cfg)
			v.WaitEvent(t, event.SlotTry, bootTimeout, kv("slot", "b"), kv("state", "trial"), kv("tries_left", "0"))
			waitUp(t, v, "tiny", 1, "a", 2*bootTimeout)
			v.WaitEvent(t, event.Committed, bootTimeout, kv("slot", "a"))
			v.Kill(t)
			if n := len(v.Events(event.SlotTry, kv("slot", "b"))); n != 1 {
				t.Errorf("the failed trial was tried %d times, want exactly once", n)
			}
			rec := record(t, disk)
			if rec.Slots[1].State != bootctl.Bad || !strings.Contains(rec.Slots[1].Reason, "tries") {
				t.Errorf("slot b after its failed trial: %+v", rec.Slots[1])
			}
			if rec.Primary != 0 || rec.Slots[0].State != bootctl.Good || rec.MinVersion > 1 {
				t.Errorf("slot a must be back as the committed primary: %+v", rec)
			}
		})
	}
}
