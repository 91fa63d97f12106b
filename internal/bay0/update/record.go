package update

import (
	"fmt"

	"alpinespine.org/spine/internal/format/bootctl"
)

// TrialTries is how many boots a freshly staged Spine gets to reach its commit.
const TrialTries = 1

// ReasonWriting is what the record says of a slot while an update writes it. Found on a later
// boot, it means the write was cut (a power loss): the slot must be restored.
const ReasonWriting = "update being written"

// Target picks the slot an update may write: the one that is not running. It refuses while the
// running slot is not the committed, primary, good slot (a trial in progress, or a fallback
// boot that has not yet committed), so the Spine that stays bootable while the other slot is
// written is always one that proved itself.
func Target(r bootctl.Record, running int) (int, error) {
	if running != 0 && running != 1 {
		return 0, fmt.Errorf("%w: running slot %d is not a or b", ErrRefused, running)
	}
	s := r.Slots[running]
	switch {
	case s.State != bootctl.Good:
		return 0, fmt.Errorf("%w: the running slot %s is %s, not yet committed good", ErrRefused, bootctl.SlotName(running), s.State)
	case r.Primary != running:
		return 0, fmt.Errorf("%w: the running slot %s is a fallback, not the primary; it must commit first", ErrRefused, bootctl.SlotName(running))
	}
	return 1 - running, nil
}

// Begin empties the target slot in the record just before its first byte is overwritten, so
// that a power cut while writing leaves a record that never points at a half-written Spine,
// and says why (ReasonWriting).
func Begin(r *bootctl.Record, target int) {
	r.Slots[target] = bootctl.Slot{State: bootctl.Empty, Reason: ReasonWriting}
}

// Finish marks a written and verified slot for trial and makes it primary; the next boot tries
// it once, and the governor commits it or the boot law falls back to the running slot.
func Finish(r *bootctl.Record, target int, version, imageSize uint64) {
	r.Slots[target] = bootctl.Slot{State: bootctl.Trial, TriesLeft: TrialTries, Version: version, ImageSize: imageSize}
	r.Primary = target
}

// Restored marks a slot that holds a verified copy of the running, committed Spine: good, with
// that Spine's version. The primary and the anti-rollback floor do not change.
func Restored(r *bootctl.Record, target int, version, imageSize uint64) {
	r.Slots[target] = bootctl.Slot{State: bootctl.Good, Version: version, ImageSize: imageSize}
}

// Interrupted reports whether the slot beside the running one was left half-written by an
// update that a power loss cut, while the running slot is the committed primary that can
// restore it.
func Interrupted(r bootctl.Record, running int) bool {
	if running != 0 && running != 1 {
		return false
	}
	o := r.Slots[1-running]
	return o.State == bootctl.Empty && o.Reason == ReasonWriting && r.Slots[running].State == bootctl.Good && r.Primary == running
}
