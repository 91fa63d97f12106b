package governor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	bay0courier "alpinespine.org/spine/internal/bay0/courier"
	"alpinespine.org/spine/internal/bay0/halt"
	"alpinespine.org/spine/internal/bay0/persona"
	"alpinespine.org/spine/internal/bay0/supervise"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/policy"
)

// cgroupParent holds one cgroup v2 leaf per running persona.
const cgroupParent = "/sys/fs/cgroup/personas"

// personas is what the personas phase started: PID 1's reaper, the only waiter for children,
// and the persona supervisor, running until stop.
type personas struct {
	reaper *reaper
	sup    *supervise.Supervisor
	stop   func()
	logs   personaLogs
	// courier is bay0's end of the courier persona's channel, nil without one; courierName
	// names that persona.
	courier     *bay0courier.Channel
	courierName string
}

// startPersonas is the personas phase: it makes PID 1's reaper (before any child exists) and
// launches every persona of the policy under supervision, in policy order, with /persist at
// persistRoot. The supervisor's loop is a supervised loop: it beats for the watchdog, and its
// end or panic ends the machine.
func (g *Governor) startPersonas(pol policy.Policy, persistRoot string) (*personas, error) {
	kmsg, r, err := g.kernel.PersonaHost()
	if err != nil {
		return nil, err
	}
	logs := g.openPersonaLogs(pol, persistRoot)
	var courierCh *bay0courier.Channel
	var courierEnd *os.File
	courierName := ""
	for _, q := range pol.Personas {
		if q.Courier {
			courierName = q.Name
			// A channel that cannot be made leaves the courier refused, not the machine down.
			if courierCh, courierEnd, err = bay0courier.NewChannel(); err != nil {
				g.logf("courier %s: %v", q.Name, err)
			}
		}
	}
	sup, err := supervise.New(supervise.Config{
		Courier:   courierEnd,
		KernelLog: kmsg,
		Console:   g.log,
		Output: func(name string) io.Writer {
			return logs.output(g.con, name)
		},
		Launcher:     supervise.Kernel{Spawner: r},
		SpineRoot:    "/",
		PersistRoot:  persistRoot,
		CgroupParent: cgroupParent,
		Beat:         g.health.Beater(LoopSupervisor),
		Containment:  g.containmentFailed,
	}, pol)
	if err != nil {
		return nil, err
	}
	// From here on the console is drained asynchronously: the prompt is behind us.
	g.con.Start()
	g.hangAt("personas")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	stop := func() {
		cancel()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
	}
	g.goSafe("persona supervisor", func() error {
		defer close(done)
		return sup.Run(ctx)
	})
	return &personas{reaper: r, sup: sup, stop: stop, logs: logs, courier: courierCh, courierName: courierName}, nil
}

// quiesce is the personas' halt duty. The supervisor would replace the personas halt has just
// killed: stop it, then kill whatever it started meanwhile and close the kept logs, so nothing
// holds /persist when it is closed.
func (p *personas) quiesce(halt.Action, string) error {
	p.stop()
	halt.KillAll(2 * time.Second)
	p.logs.close()
	return nil
}

// stopBudget bounds the personas' graceful stop when the machine goes down: the longest
// stop_timeout of the policy, the kill and cleanup after it, and a margin.
func stopBudget(pol policy.Policy) time.Duration {
	var longest time.Duration
	for _, p := range pol.Personas {
		longest = max(longest, time.Duration(p.StopTimeout))
	}
	return longest + persona.DestroyTimeout + 2*time.Second
}

// stopPersonasGracefully asks every persona to end (its stop signal, then its stop_timeout,
// then cgroup.kill), all at once, when the machine ends on purpose: an operator's reboot,
// power off or update, or a trial that missed its deadline. A failure (err nil after a panic,
// or an error from a supervised loop) goes down at once, as the reset doctrine wants. It runs
// on the halting goroutine, which the watchdog is fed for (Run's LoopHalt budget). ps is nil
// when the machine ends before the personas phase.
func (g *Governor) stopPersonasGracefully(ps *personas, pol policy.Policy, err error) {
	var pe *halt.PowerError
	if ps == nil || err == nil || g.abrupt.Load() || !errors.As(err, &pe) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopBudget(pol))
	defer cancel()
	start := time.Now()
	if err := ps.sup.Shutdown(ctx); err != nil {
		g.logf("personas not all stopped after %s: %v; killing what is left", time.Since(start).Round(time.Millisecond), err)
		return
	}
	g.logf("personas stopped in %s", time.Since(start).Round(time.Millisecond))
	g.emit(event.New(event.PersonasDown).Int("ms", time.Since(start).Milliseconds()))
}

// containmentFailed ends the machine: bay0 cannot confirm that a persona's processes are gone,
// and it does not guess (Article VIII §1). The reset is unclean: it counts toward the slot's
// limit of resets in a row.
func (g *Governor) containmentFailed(name string, err error) {
	g.emit(event.New(event.Containment).With("name", name).With("reason", err.Error()))
	select {
	case g.fatal <- &halt.PowerError{Action: halt.Reboot, Reason: fmt.Sprintf("containment: persona %s: %v", name, err)}:
	default: // the machine is already going down
	}
}
