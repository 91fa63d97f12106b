package stage1

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/bay0/halt"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/handoff"
	"alpinespine.org/spine/internal/format/manifest"
)

// memDev is a bay0-state partition in memory.
type memDev struct{ b []byte }

func (d *memDev) ReadAt(p []byte, off int64) (int, error)  { return copy(p, d.b[off:]), nil }
func (d *memDev) WriteAt(p []byte, off int64) (int, error) { return copy(d.b[off:], p), nil }
func (d *memDev) Sync() error                              { return nil }

// fakeSystem records what stage 1 asks of the kernel; mountErr decides each slot's fate.
type fakeSystem struct {
	dev       *memDev
	mountErr  [2]error
	mounts    []int
	triesSeen []uint8 // tries_left of the tried slot as stored on disk when Mount is called
	switched  *handoff.Handoff
	armed     bool
}

type fakeDog struct{}

func (fakeDog) Feed() error { return nil }
func (fakeDog) FD() int     { return 7 }

func (f *fakeSystem) Setup() error                              { return nil }
func (f *fakeSystem) TrustedKeys() ([]ed25519.PublicKey, error) { return nil, nil }
func (f *fakeSystem) OpenState() (bootctl.Device, error)        { return f.dev, nil }
func (f *fakeSystem) SwitchRoot(h handoff.Handoff) error {
	f.switched = &h
	return errors.New("switched")
}
func (f *fakeSystem) ArmWatchdog() (Dog, error) { f.armed = true; return fakeDog{}, nil }
func (f *fakeSystem) Mount(slot int, size uint64, _ []ed25519.PublicKey, _ uint64, progress func()) (handoff.Handoff, error) {
	if !f.armed {
		return handoff.Handoff{}, errors.New("mounted before the watchdog was armed")
	}
	progress()
	f.mounts = append(f.mounts, slot)
	rec, _, err := bootctl.Load(f.dev)
	if err != nil {
		return handoff.Handoff{}, err
	}
	f.triesSeen = append(f.triesSeen, rec.Slots[slot].TriesLeft)
	if f.mountErr[slot] != nil {
		return handoff.Handoff{}, f.mountErr[slot]
	}
	return handoff.Handoff{Slot: slot, Manifest: manifest.Manifest{Name: "t", Version: rec.Slots[slot].Version}}, nil
}

func newSystem(t *testing.T, rec bootctl.Record) *fakeSystem {
	t.Helper()
	dev := &memDev{b: make([]byte, 2*bootctl.RecordSize)}
	if _, _, err := bootctl.Store(dev, bootctl.Record{}, 1, rec); err != nil {
		t.Fatal(err)
	}
	return &fakeSystem{dev: dev}
}

func TestTrialTryIsPersistedBeforeMount(t *testing.T) {
	rec := bootctl.Initial(&bootctl.SlotInit{Version: 2, ImageSize: 1}, &bootctl.SlotInit{Version: 1, ImageSize: 1})
	rec.Slots[0].State, rec.Slots[0].TriesLeft = bootctl.Trial, 1
	sys := newSystem(t, rec)
	sys.mountErr[0] = errors.New("bad block")
	var log bytes.Buffer
	err := Run(sys, &log)
	if sys.switched == nil || sys.switched.Slot != 1 {
		t.Fatalf("want a switch to slot b, got %+v (err %v)", sys.switched, err)
	}
	if len(sys.triesSeen) != 2 || sys.triesSeen[0] != 0 {
		t.Fatalf("slot a was mounted while the disk still said %v tries left; the try must be written first", sys.triesSeen)
	}
	got, _, err := bootctl.Load(sys.dev)
	if err != nil {
		t.Fatal(err)
	}
	if got.Slots[0].State != bootctl.Bad || !strings.Contains(got.Slots[0].Reason, "bad block") {
		t.Fatalf("slot a after failing: %+v", got.Slots[0])
	}
	if !strings.Contains(log.String(), "slot a failed: bad block") {
		t.Fatalf("console does not name the failure:\n%s", log.String())
	}
}

func TestNoSlotPowersOffWithEveryReason(t *testing.T) {
	rec := bootctl.Initial(&bootctl.SlotInit{Version: 1, ImageSize: 1}, &bootctl.SlotInit{Version: 1, ImageSize: 1})
	sys := newSystem(t, rec)
	sys.mountErr = [2]error{errors.New("reason-a"), errors.New("reason-b")}
	var log bytes.Buffer
	err := Run(sys, &log)
	var pe *halt.PowerError
	if !errors.As(err, &pe) || pe.Action != halt.PowerOff {
		t.Fatalf("want a power off, got %v", err)
	}
	for _, want := range []string{"reason-a", "reason-b"} {
		if !strings.Contains(log.String(), "no boot: slot") || !strings.Contains(log.String(), want) {
			t.Errorf("console misses %q:\n%s", want, log.String())
		}
	}
	if sys.switched != nil {
		t.Fatal("switched root with no valid slot")
	}
}

func TestUnreadableRecordPowersOff(t *testing.T) {
	sys := &fakeSystem{dev: &memDev{b: make([]byte, 2*bootctl.RecordSize)}}
	var pe *halt.PowerError
	if err := Run(sys, &bytes.Buffer{}); !errors.As(err, &pe) || pe.Action != halt.PowerOff {
		t.Fatalf("want a power off on a blank record, got %v", err)
	}
	if len(sys.mounts) != 0 {
		t.Fatal("tried a slot without a record")
	}
}

func TestPrimaryFirst(t *testing.T) {
	rec := bootctl.Initial(&bootctl.SlotInit{Version: 1, ImageSize: 1}, &bootctl.SlotInit{Version: 1, ImageSize: 1})
	rec.Primary = 1
	sys := newSystem(t, rec)
	_ = Run(sys, &bytes.Buffer{})
	if len(sys.mounts) != 1 || sys.mounts[0] != 1 || sys.switched == nil || sys.switched.Slot != 1 {
		t.Fatalf("primary B: mounts %v, switched %+v", sys.mounts, sys.switched)
	}
}
