package bootctl

import "fmt"

// Outcome is the result of trying (verifying and mounting) a slot during this boot.
type Outcome struct {
	// Slot is the slot tried.
	Slot int
	// OK is true when the slot verified and mounted.
	OK bool
	// Reason says why the try failed.
	Reason string
}

// ActionKind is what the boot must do next.
type ActionKind int

// Action kinds. The zero ActionKind is none of them, so a zero Action is
// never mistaken for an instruction.
const (
	// Try: persist the returned record, then verify and mount Action.Slot.
	Try ActionKind = iota + 1
	// Boot: switch root into Action.Slot, which verified during this boot.
	Boot
	// PowerOff: no slot is left; print Action.Reasons and power off.
	PowerOff
)

func (k ActionKind) String() string {
	switch k {
	case Try:
		return "try"
	case Boot:
		return "boot"
	case PowerOff:
		return "poweroff"
	}
	return fmt.Sprintf("ActionKind(%d)", int(k))
}

// Action is the decision of Next.
type Action struct {
	// Kind is what to do.
	Kind ActionKind
	// Slot is the slot to try or boot.
	Slot int
	// Reasons says why each slot passed over was not booted, one per slot in
	// candidate order (primary first). For PowerOff it covers every slot.
	Reasons []string
}

// Reasons stored in the record or returned by Next.
const (
	// ReasonOutOfTries is stored for a trial slot that used up its tries
	// without the governor committing it: it hung or crashed in an earlier boot.
	ReasonOutOfTries = "trial ran out of tries"
	// ReasonResetLoop is stored for a good slot whose boots ended without a clean end
	// ResetLimit times in a row: it crashes or hangs at run time, and the last-known-good
	// Spine in the other slot boots instead.
	ReasonResetLoop = "reset too many times in a row without a clean end"
	// reasonFailed is stored when a failed Outcome gives no reason.
	reasonFailed = "failed"
)

// Next applies the boot law "A -> B -> poweroff". Candidates are the primary
// slot, then the other; each is tried at most once per boot. outcomes are the
// slots already tried during this boot, in order (only the first outcome of
// a slot counts). For each candidate in order:
//
//   - tried and OK: Boot it;
//   - tried and failed: it is marked Bad with the outcome's reason; next candidate;
//   - Empty or Bad: next candidate;
//   - Trial with no tries left: marked Bad (ReasonOutOfTries); next candidate;
//   - Trial with tries left: TriesLeft is decremented and the slot is tried.
//     The caller must persist the returned record before trying, so that a
//     Spine that hangs the machine still uses up its try;
//   - Good with Resets at its limit (ResetLimit, or DefaultResetLimit): marked Bad
//     (ReasonResetLoop); next candidate;
//   - Good: Resets is incremented (CleanEnd clears it) and the slot is tried; as for a
//     trial, the record is persisted before the try.
//
// With no candidate left the action is PowerOff. Every failed outcome marks
// its slot Bad, whichever action is returned.
//
// Next is pure: the returned Record is rec with those changes and nothing
// else (Seq is unchanged). The caller stores it when it differs from rec
// (error handling left out):
//
//	rec, cp, err := bootctl.Load(dev)
//	var outcomes []bootctl.Outcome
//	for {
//		act, next := bootctl.Next(rec, outcomes)
//		if next != rec {
//			rec, cp, err = bootctl.Store(dev, rec, cp, next)
//		}
//		switch act.Kind {
//		case bootctl.Try:
//			outcomes = append(outcomes, verifyAndMount(act.Slot))
//		case bootctl.Boot:
//			return switchRoot(act.Slot)
//		default:
//			return powerOff(act.Reasons)
//		}
//	}
func Next(rec Record, outcomes []Outcome) (Action, Record) {
	out := rec // Slots is an array: this is a deep copy.

	var tried [NumSlots]bool
	var results [NumSlots]Outcome
	for _, o := range outcomes {
		if o.Slot < 0 || o.Slot >= NumSlots || tried[o.Slot] {
			continue
		}
		tried[o.Slot], results[o.Slot] = true, o
	}
	// A failed try is a fact whatever is decided below: record it first.
	for s := range NumSlots {
		if tried[s] && !results[s].OK {
			out.Slots[s] = markBad(out.Slots[s], failReason(results[s]))
		}
	}

	var reasons []string
	for _, s := range candidates(rec.Primary) {
		name := SlotName(s)
		if tried[s] {
			if results[s].OK {
				return Action{Kind: Boot, Slot: s, Reasons: reasons}, out
			}
			reasons = append(reasons, fmt.Sprintf("slot %s: %s", name, failReason(results[s])))
			continue
		}
		slot := out.Slots[s]
		switch slot.State {
		case Empty:
			reasons = append(reasons, fmt.Sprintf("slot %s: empty", name))
		case Bad:
			if slot.Reason == "" {
				reasons = append(reasons, fmt.Sprintf("slot %s: bad", name))
			} else {
				reasons = append(reasons, fmt.Sprintf("slot %s: bad: %s", name, slot.Reason))
			}
		case Trial:
			if slot.TriesLeft == 0 {
				out.Slots[s] = markBad(slot, ReasonOutOfTries)
				reasons = append(reasons, fmt.Sprintf("slot %s: %s", name, ReasonOutOfTries))
				continue
			}
			out.Slots[s].TriesLeft--
			return Action{Kind: Try, Slot: s, Reasons: reasons}, out
		case Good:
			if limit := slot.limit(); slot.Resets >= limit {
				reason := fmt.Sprintf("%s (%d)", ReasonResetLoop, limit)
				out.Slots[s] = markBad(slot, reason)
				reasons = append(reasons, fmt.Sprintf("slot %s: %s", name, reason))
				continue
			}
			out.Slots[s].Resets++
			return Action{Kind: Try, Slot: s, Reasons: reasons}, out
		default:
			// ParseRecord refuses unknown states; a Record built in memory may not.
			reasons = append(reasons, fmt.Sprintf("slot %s: unknown state %d", name, uint8(slot.State)))
		}
	}
	return Action{Kind: PowerOff, Reasons: reasons}, out
}

// candidates returns the slots in boot order. Any primary other than B means
// A: the order stays mechanical even for a record built wrongly in memory.
func candidates(primary int) [NumSlots]int {
	if primary == 1 {
		return [NumSlots]int{1, 0}
	}
	return [NumSlots]int{0, 1}
}

func markBad(s Slot, reason string) Slot {
	s.State = Bad
	s.TriesLeft, s.Resets, s.ResetLimit = 0, 0, 0
	s.Reason = Clip(reason, ReasonSize)
	return s
}

func failReason(o Outcome) string {
	if o.Reason == "" {
		return reasonFailed
	}
	return o.Reason
}
