package bootctl

import (
	"errors"
	"fmt"
)

// Every change of the record outside the boot decision is one of the pure functions below:
// each takes a record and returns the changed copy (Seq untouched; Store sets it), so the
// rules live here, under table tests and a fuzz test of the invariants (Check), and callers
// only choose which change to apply.

// DefaultResetLimit is how many boots of a Good slot in a row may end without a clean end
// before the slot is marked Bad, when the record does not say (Slot.ResetLimit 0).
const DefaultResetLimit = 3

// TrialTries is how many boots a freshly staged Spine gets to reach its commit.
const TrialTries = 1

// ReasonWriting is what the record says of a slot while an update writes it. Found on a later
// boot, it means the write was cut (a power loss): the slot must be restored.
const ReasonWriting = "update being written"

// UncleanReset is the reason the governor records as soon as it runs: a clean end
// overwrites it, so finding it at the next boot means the machine died without a word
// (watchdog reset, kernel panic, dm-verity restart, power loss).
const UncleanReset = "unclean: no reason recorded (watchdog reset, kernel panic, dm-verity restart or power loss)"

// ErrChange is a change the record's rules refuse.
var ErrChange = errors.New("boot record change refused")

// limit is the slot's reset limit.
func (s Slot) limit() uint8 {
	if s.ResetLimit == 0 {
		return DefaultResetLimit
	}
	return s.ResetLimit
}

// Commit makes the running slot good and primary after its health window, records its reset
// limit (0 = DefaultResetLimit) and clears its resets, and raises the anti-rollback floor to
// the oldest version still held as good (or staged for trial): the last-known-good Spine in
// the other slot stays bootable, anything older than it never boots again. The floor never
// drops.
func Commit(r Record, slot int, version uint64, resetLimit uint8) (Record, error) {
	if err := checkSlot(slot); err != nil {
		return r, err
	}
	if version < r.MinVersion {
		return r, fmt.Errorf("%w: commit slot %s v%d below min_version %d", ErrChange, SlotName(slot), version, r.MinVersion)
	}
	r.Slots[slot] = Slot{State: Good, Version: version, ImageSize: r.Slots[slot].ImageSize, ResetLimit: resetLimit}
	r.Primary = slot
	floor := version
	if o := r.Slots[1-slot]; (o.State == Good || o.State == Trial) && o.Version >= r.MinVersion && o.Version < floor {
		floor = o.Version
	}
	r.MinVersion = max(r.MinVersion, floor)
	return r, nil
}

// BeginUpdate empties the target slot before a byte of it is overwritten, so that a power cut
// while writing leaves a record that never points at a half-written Spine. The target must
// not be the primary slot (the running, committed one).
func BeginUpdate(r Record, target int) (Record, error) {
	if err := checkSlot(target); err != nil {
		return r, err
	}
	if target == r.Primary {
		return r, fmt.Errorf("%w: update into slot %s, the primary", ErrChange, SlotName(target))
	}
	r.Slots[target] = Slot{State: Empty, Reason: ReasonWriting}
	return r, nil
}

// FinishUpdate marks a written and verified slot for trial (TrialTries boots) and makes it
// primary: the next boot tries it, and the governor commits it or the boot law falls back to
// the slot that staged it. The version must be at or above the floor, and the other slot
// may not be in trial itself (at most one trial at a time).
func FinishUpdate(r Record, target int, version, imageSize uint64) (Record, error) {
	if err := checkSlot(target); err != nil {
		return r, err
	}
	if version < r.MinVersion {
		return r, fmt.Errorf("%w: stage v%d below min_version %d", ErrChange, version, r.MinVersion)
	}
	if r.Slots[1-target].State == Trial {
		return r, fmt.Errorf("%w: slot %s is already in trial", ErrChange, SlotName(1-target))
	}
	r.Slots[target] = Slot{State: Trial, TriesLeft: TrialTries, Version: version, ImageSize: imageSize}
	r.Primary = target
	return r, nil
}

// RestoreSlot marks a slot that holds a verified copy of the running, committed Spine (after an
// update failed or was cut): good, with that Spine's version. The primary and the
// anti-rollback floor do not change; the primary itself is never the one restored.
func RestoreSlot(r Record, target int, version, imageSize uint64) (Record, error) {
	if err := checkSlot(target); err != nil {
		return r, err
	}
	if target == r.Primary {
		return r, fmt.Errorf("%w: restore into slot %s, the primary", ErrChange, SlotName(target))
	}
	r.Slots[target] = Slot{State: Good, Version: version, ImageSize: imageSize}
	return r, nil
}

// MarkReset records why the machine is about to go down, or, with UncleanReset, that it may
// go down without a word.
func MarkReset(r Record, reason string) Record {
	r.LastReset = Clip(reason, LastResetSize)
	return r
}

// CleanEnd records a clean end of a boot of slot (a power off, or a reboot someone asked
// for): the reason, and the slot's resets cleared.
func CleanEnd(r Record, slot int, reason string) Record {
	r = MarkReset(r, reason)
	if slot >= 0 && slot < NumSlots {
		r.Slots[slot].Resets = 0
	}
	return r
}

// MarkFailed marks a slot Bad for reason: a slot that failed after the boot decision was made,
// under its own kernel, where Next is not run again (stage 0 has run it and counted the try).
func MarkFailed(r Record, slot int, reason string) Record {
	if checkSlot(slot) != nil {
		return r
	}
	r.Slots[slot] = markBad(r.Slots[slot], reason)
	return r
}

// ExplainReset is applied by stage 1 once it knows how this boot's tries went: when the
// previous boot ended without a word (LastReset is UncleanReset) and a slot failed its
// verification now, that failure is the likely cause (a dm-verity restart on a corrupted
// block), and the record says so for the governor to report.
func ExplainReset(r Record, outcomes []Outcome) Record {
	if r.LastReset != UncleanReset {
		return r
	}
	for _, o := range outcomes {
		if !o.OK && o.Slot >= 0 && o.Slot < NumSlots {
			return MarkReset(r, fmt.Sprintf("unclean; the next boot found slot %s damaged (a dm-verity reset?): %s",
				SlotName(o.Slot), failReason(o)))
		}
	}
	return r
}

func checkSlot(s int) error {
	if s < 0 || s >= NumSlots {
		return fmt.Errorf("%w: slot %d is not a or b", ErrChange, s)
	}
	return nil
}

// Check reports a record that breaks the rules every change keeps: at most one slot in
// trial, a trial slot at or above the floor, a primary that is a or b.
func (r Record) Check() error {
	if r.Primary != 0 && r.Primary != 1 {
		return fmt.Errorf("%w: primary slot %d", ErrInvalid, r.Primary)
	}
	if r.Slots[0].State == Trial && r.Slots[1].State == Trial {
		return fmt.Errorf("%w: both slots in trial", ErrInvalid)
	}
	for i, s := range r.Slots {
		if s.State == Trial && s.Version < r.MinVersion {
			return fmt.Errorf("%w: slot %s in trial at v%d below min_version %d", ErrInvalid, SlotName(i), s.Version, r.MinVersion)
		}
	}
	return nil
}
