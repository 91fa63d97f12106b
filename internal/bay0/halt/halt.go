// Package halt is the only way bay0 ends: every error, panic or request comes here and becomes
// a reboot or a power off, after the reason is printed on the console (or, for stage 0 only, the
// jump into the slot kernel it loaded). There is no degraded mode and no shell to fall back to.
package halt

import (
	"errors"
	"fmt"
)

// Action is what the machine does when bay0 ends.
type Action int

// The two ways a machine ends.
const (
	Reboot Action = iota
	PowerOff
)

func (a Action) String() string {
	if a == PowerOff {
		return "poweroff"
	}
	return "reboot"
}

// PowerError is a deliberate end: a boot with no valid slot powers off, an operator's reboot
// request reboots. It is told apart from a failure with errors.As.
type PowerError struct {
	Action Action
	Reason string
}

func (e *PowerError) Error() string { return e.Action.String() + ": " + e.Reason }

// Decide says what an error means. A PowerError carries its own action; anything else is a
// failure bay0 cannot classify, and a failure is answered by reboot (or, before a Spine was
// chosen, by power off: boot failures never loop).
func Decide(err error, booting bool) (Action, string) {
	var pe *PowerError
	if errors.As(err, &pe) {
		return pe.Action, pe.Reason
	}
	if booting {
		return PowerOff, fmt.Sprintf("boot failed: %v", err)
	}
	return Reboot, fmt.Sprintf("fatal: %v", err)
}
