package governor

import (
	"context"
	"time"

	"alpinespine.org/spine/internal/bay0/denial"
	"alpinespine.org/spine/internal/bay0/persist"
	"alpinespine.org/spine/internal/bay0/persona"
	"alpinespine.org/spine/internal/bay0/supervise"
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
		KernelLog:    kmsg,
		Console:      g.log,
		Launcher:     supervise.Kernel{Spawner: g.reaper},
		SpineRoot:    "/",
		PersistRoot:  persistRoot(),
		CgroupParent: cgroupParent,
		Beat:         g.health.Beater(LoopSupervisor),
	}, g.policy)
	if err != nil {
		return err
	}
	g.personas = sup
	g.personasUp = sup.AllUp
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

// persistRoot is /persist when it is mounted as it must be, and "" otherwise: personas with
// data = true then refuse to start.
func persistRoot() string {
	if persist.Mounted() {
		return persist.Root
	}
	return ""
}
