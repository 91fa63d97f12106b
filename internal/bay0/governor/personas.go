package governor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"alpinespine.org/spine/internal/bay0/denial"
	"alpinespine.org/spine/internal/bay0/halt"
	"alpinespine.org/spine/internal/bay0/persist"
	"alpinespine.org/spine/internal/bay0/persona"
	"alpinespine.org/spine/internal/bay0/supervise"
	"alpinespine.org/spine/internal/format/event"
)

// cgroupParent holds one cgroup v2 leaf per running persona.
const cgroupParent = "/sys/fs/cgroup/personas"

// startPersonas makes PID 1's reaper (before any child exists) and launches every persona of
// the policy under supervision, in policy order. The supervisor's loop is a supervised loop:
// it beats for the watchdog, and its end or panic ends the machine.
func (g *Governor) startPersonas() error {
	g.reaper = newReaper()
	if err := persona.PrepareCgroups(cgroupParent); err != nil {
		return err
	}
	// Refused system calls are logged by the kernel and reported by the supervisor.
	if err := denial.EnableLogging(); err != nil {
		return err
	}
	kmsg, err := denial.OpenKernelLog()
	if err != nil {
		return err
	}
	sup, err := supervise.New(supervise.Config{
		KernelLog: kmsg,
		Console:   g.log,
		Output: func(name string) io.Writer {
			return io.MultiWriter(g.con.Source("persona "+name, 0), g.personaRing)
		},
		Launcher:     supervise.Kernel{Spawner: g.reaper},
		SpineRoot:    "/",
		PersistRoot:  persistRoot(),
		CgroupParent: cgroupParent,
		Beat:         g.health.Beater(LoopSupervisor),
		Containment:  g.containmentFailed,
	}, g.policy)
	if err != nil {
		return err
	}
	g.personas = sup
	// From here on the console is drained asynchronously: the prompt is behind us.
	g.con.Start()
	g.hangAt("personas")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	g.stopPersonas = func() {
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
	return nil
}

// stopBudget bounds the personas' graceful stop when the machine goes down: the longest
// stop_timeout of the policy, the kill and cleanup after it, and a margin.
func (g *Governor) stopBudget() time.Duration {
	var longest time.Duration
	for _, p := range g.policy.Personas {
		longest = max(longest, time.Duration(p.StopTimeout))
	}
	return longest + persona.DestroyTimeout + 2*time.Second
}

// stopPersonasGracefully asks every persona to end (its stop signal, then its stop_timeout,
// then cgroup.kill), all at once, when the machine ends on purpose: an operator's reboot,
// power off or update, or a trial that missed its deadline. A failure (err nil after a panic,
// or an error from a supervised loop) goes down at once, as the reset doctrine wants. It runs
// on the halting goroutine, which the watchdog is fed for (Run's LoopHalt budget).
func (g *Governor) stopPersonasGracefully(err error) {
	var pe *halt.PowerError
	if g.personas == nil || err == nil || g.abrupt.Load() || !errors.As(err, &pe) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.stopBudget())
	defer cancel()
	start := time.Now()
	if err := g.personas.Shutdown(ctx); err != nil {
		g.logf("personas not all stopped after %s: %v; killing what is left", time.Since(start).Round(time.Millisecond), err)
		return
	}
	g.logf("personas stopped in %s", time.Since(start).Round(time.Millisecond))
	g.emit(event.New(event.PersonasDown).Int("ms", time.Since(start).Milliseconds()))
}

// persistRoot is /persist when it is mounted as it must be, and "" otherwise: personas with
// data = true then refuse to start.
func persistRoot() string {
	if persist.Mounted() {
		return persist.Root
	}
	return ""
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
