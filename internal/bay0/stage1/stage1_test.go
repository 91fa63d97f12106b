package stage1

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/halt"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/handoff"
	"alpinespine.org/spine/internal/format/initramfs"
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
	started   *handoff.Handoff // the slot whose kernel StartKernel was asked to start
	armed     bool
	role      initramfs.Role
	eager     []bool // Mount's eager argument, per call
	switchErr error  // what SwitchRoot returns; default an error standing for the exec
	timeout   time.Duration
}

type fakeDog struct{ timeout *time.Duration }

func (fakeDog) Feed() error                        { return nil }
func (fakeDog) FD() int                            { return 7 }
func (d fakeDog) SetTimeout(t time.Duration) error { *d.timeout = t; return nil }

func (f *fakeSystem) Setup() error                              { return nil }
func (f *fakeSystem) TrustedKeys() ([]ed25519.PublicKey, error) { return nil, nil }
func (f *fakeSystem) OpenState() (bootctl.Device, error)        { return f.dev, nil }
func (f *fakeSystem) SwitchRoot(h handoff.Handoff) error {
	f.switched = &h
	if f.switchErr != nil {
		return f.switchErr
	}
	return errors.New("switched")
}
func (f *fakeSystem) Role() (initramfs.Role, error) { return f.role, nil }
func (f *fakeSystem) StartKernel(h handoff.Handoff, _ [][]byte) error {
	f.started = &h
	return errors.New("started")
}
func (f *fakeSystem) ArmWatchdog() (Dog, error) {
	f.armed, f.timeout = true, WatchdogTimeout
	return fakeDog{&f.timeout}, nil
}
func (f *fakeSystem) Mount(slot int, size uint64, _ []ed25519.PublicKey, _ uint64, eager bool, progress func()) (handoff.Handoff, error) {
	f.eager = append(f.eager, eager)
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
	return handoff.Handoff{Slot: slot, Manifest: manifest.Manifest{Name: "t", Version: rec.Slots[slot].Version, KernelSHA256: slotKernel}}, nil
}

// slotKernel is the kernel_sha256 of every fake slot's manifest.
const slotKernel = "5e1f0000000000000000000000000000000000000000000000000000000000aa"

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
	if len(sys.eager) != 2 || !sys.eager[0] || !sys.eager[1] {
		t.Fatalf("the boot law mounted without eager verification: %v", sys.eager)
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
	// A direct boot's kernel came from the host, not from the slot: the governor must not
	// report the manifest's kernel as the running one.
	if sys.switched.KernelSHA256 != "" {
		t.Errorf("stage 1 under a kernel it did not check says it runs %s", sys.switched.KernelSHA256)
	}
}

// TestStage0StartsTheSlotKernel: as stage 0, the law runs as in stage 1 (the trial's try is
// counted, a failed slot is marked bad) but the machine goes to the chosen slot's own kernel,
// never through a switch of root under stage 0's kernel.
func TestStage0StartsTheSlotKernel(t *testing.T) {
	rec := bootctl.Initial(&bootctl.SlotInit{Version: 2, ImageSize: 1}, &bootctl.SlotInit{Version: 1, ImageSize: 1})
	rec.Slots[0].State, rec.Slots[0].TriesLeft = bootctl.Trial, 1
	sys := newSystem(t, rec)
	sys.role = initramfs.RoleStage0
	sys.mountErr[0] = errors.New("kernel damaged")
	var log bytes.Buffer
	_ = Run(sys, &log)
	if sys.switched != nil {
		t.Fatalf("stage 0 switched root: %+v", sys.switched)
	}
	if sys.started == nil || sys.started.Slot != 1 {
		t.Fatalf("want slot b's kernel started, got %+v", sys.started)
	}
	// Nothing feeds the watchdog between the kexec and the slot's stage 1.
	if sys.timeout != KernelStartTimeout {
		t.Errorf("watchdog timeout %s when the slot kernel starts, want %s", sys.timeout, KernelStartTimeout)
	}
	got, _, err := bootctl.Load(sys.dev)
	if err != nil {
		t.Fatal(err)
	}
	if got.Slots[0].State != bootctl.Bad || got.Slots[1].Resets != 1 {
		t.Fatalf("record after stage 0: %+v", got.Slots)
	}
	if !strings.Contains(log.String(), "stage1-start role=stage0") {
		t.Errorf("stage 0 does not say its role:\n%s", log.String())
	}
}

// TestSlotRoleBootsOnlyThatSlot: under the slot's own kernel, bay0 mounts the slot stage 0
// chose and nothing else, and leaves the record as stage 0 wrote it (no second try counted).
func TestSlotRoleBootsOnlyThatSlot(t *testing.T) {
	rec := bootctl.Initial(&bootctl.SlotInit{Version: 1, ImageSize: 1}, &bootctl.SlotInit{Version: 1, ImageSize: 1})
	rec.Slots[1].Resets = 1
	sys := newSystem(t, rec)
	sys.role = initramfs.SlotRole("b")
	before := append([]byte(nil), sys.dev.b...)
	_ = Run(sys, &bytes.Buffer{})
	if len(sys.mounts) != 1 || sys.mounts[0] != 1 || sys.switched == nil || sys.switched.Slot != 1 {
		t.Fatalf("role slot b: mounts %v, switched %+v", sys.mounts, sys.switched)
	}
	if sys.eager[0] {
		t.Error("the slot kernel read the whole slot again after stage 0 did")
	}
	if !bytes.Equal(before, sys.dev.b) {
		t.Error("the record changed under the slot's kernel")
	}
	if len(sys.switched.Keys) != 0 || sys.switched.WatchdogFD != 7 || sys.switched.KernelSHA256 != slotKernel {
		t.Errorf("handoff %+v", sys.switched)
	}
	if sys.timeout != WatchdogTimeout {
		t.Errorf("the slot's stage 1 hands over with watchdog timeout %s, want %s", sys.timeout, WatchdogTimeout)
	}
}

// TestSlotRoleFailureMarksBadAndReboots: a slot that fails under its own kernel is marked bad
// and the machine reboots into stage 0, which then boots the other slot.
func TestSlotRoleFailureMarksBadAndReboots(t *testing.T) {
	rec := bootctl.Initial(&bootctl.SlotInit{Version: 1, ImageSize: 1}, &bootctl.SlotInit{Version: 1, ImageSize: 1})
	sys := newSystem(t, rec)
	sys.role = initramfs.SlotRole("a")
	sys.mountErr[0] = errors.New("no dm-verity in this kernel")
	err := Run(sys, &bytes.Buffer{})
	var pe *halt.PowerError
	if !errors.As(err, &pe) || pe.Action != halt.Reboot {
		t.Fatalf("want a reboot, got %v", err)
	}
	got, _, err := bootctl.Load(sys.dev)
	if err != nil {
		t.Fatal(err)
	}
	if got.Slots[0].State != bootctl.Bad || !strings.Contains(got.Slots[0].Reason, "no dm-verity") || got.Slots[1] != rec.Slots[1] {
		t.Fatalf("record: %+v", got.Slots)
	}
	if len(sys.mounts) != 1 || sys.switched != nil {
		t.Fatalf("mounts %v, switched %+v", sys.mounts, sys.switched)
	}
}

// countingDog counts its feeds.
type countingDog struct{ feeds atomic.Int64 }

func (d *countingDog) Feed() error { d.feeds.Add(1); return nil }
func (d *countingDog) FD() int     { return 7 }

func (d *countingDog) SetTimeout(time.Duration) error { return nil }

// dogSystem is a fakeSystem whose watchdog counts feeds.
type dogSystem struct {
	*fakeSystem
	dog *countingDog
}

func (d dogSystem) ArmWatchdog() (Dog, error) { d.armed = true; return d.dog, nil }

// TestGovernHere: when the Spine's bay0 is the running one, Run hands over and returns
// ErrGovernHere, unwrapped, with its watchdog feeder stopped: the governor adopts the watchdog
// in the same process, as after an exec.
func TestGovernHere(t *testing.T) {
	rec := bootctl.Initial(&bootctl.SlotInit{Version: 1, ImageSize: 1}, &bootctl.SlotInit{Version: 1, ImageSize: 1})
	sys := dogSystem{fakeSystem: newSystem(t, rec), dog: &countingDog{}}
	sys.switchErr = ErrGovernHere
	var log bytes.Buffer
	if err := Run(sys, &log); err != ErrGovernHere {
		t.Fatalf("Run = %v, want ErrGovernHere itself", err)
	}
	if sys.switched == nil || sys.switched.Slot != 0 || sys.switched.WatchdogFD != 7 {
		t.Fatalf("handoff %+v", sys.switched)
	}
	n := sys.dog.feeds.Load()
	time.Sleep(2 * Window / 6)
	if m := sys.dog.feeds.Load(); m != n {
		t.Errorf("stage 1 still feeds the watchdog after handing over (%d feeds, then %d)", n, m)
	}
}

func TestGovernsHere(t *testing.T) {
	sum := strings.Repeat("0a", 32)
	for _, c := range []struct {
		initramfs, manifest string
		want                bool
	}{
		{sum + "\n", sum, true},
		{sum, sum, true},
		{"", "", false},                        // neither says
		{sum + "\n", "", false},                // a Spine built before bay0_sha256: exec its bay0
		{"", sum, false},                       // an initramfs that does not say
		{strings.Repeat("0b", 32), sum, false}, // another bay0
		{sum + "\n\n", sum, false},
	} {
		if got := GovernsHere(c.initramfs, c.manifest); got != c.want {
			t.Errorf("GovernsHere(%q, %q) = %v, want %v", c.initramfs, c.manifest, got, c.want)
		}
	}
}
