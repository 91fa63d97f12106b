package update

import (
	"fmt"

	"alpinespine.org/spine/internal/format/bootctl"
)

// TrialTries is how many boots a freshly staged Spine gets to reach its commit.
const TrialTries = 1

// Target picks the slot an update may write: the one that is not running. It refuses while the
// running slot is not the committed, primary, good slot (a trial in progress, or a fallback
// boot that has not yet committed), so the last good Spine is never the one overwritten.
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

// Begin empties the target slot in the record before a byte of it is overwritten, so that a
// power cut while writing leaves a record that never points at a half-written Spine.
func Begin(r *bootctl.Record, target int) {
	r.Slots[target] = bootctl.Slot{State: bootctl.Empty, Reason: "update being written"}
}

// Finish marks a written and verified slot for trial and makes it primary; the next boot tries
// it once, and the governor commits it or the boot law falls back to the running slot.
func Finish(r *bootctl.Record, target int, version, imageSize uint64) {
	r.Slots[target] = bootctl.Slot{State: bootctl.Trial, TriesLeft: TrialTries, Version: version, ImageSize: imageSize}
	r.Primary = target
}
