package update

import (
	"fmt"

	"alpinespine.org/spine/internal/format/bootctl"
)

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

// Interrupted reports whether the slot beside the running one was left half-written by an
// update that a power loss cut, while the running slot is the committed primary that can
// restore it.
func Interrupted(r bootctl.Record, running int) bool {
	if running != 0 && running != 1 {
		return false
	}
	o := r.Slots[1-running]
	return o.State == bootctl.Empty && o.Reason == bootctl.ReasonWriting && r.Slots[running].State == bootctl.Good && r.Primary == running
}
