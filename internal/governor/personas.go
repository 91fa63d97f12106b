package governor

import (
	"context"
	"os"
	"syscall"
	"time"

	"alpinespine.org/spine/internal/persist"
	"alpinespine.org/spine/internal/persona"
	"alpinespine.org/spine/internal/supervise"
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
	sup, err := supervise.New(supervise.Config{
		Console:      g.log,
		Launcher:     supervise.Kernel{Spawner: g.reaper},
		SpineRoot:    "/",
		PersistRoot:  mountedAt(persist.Root),
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

// mountedAt returns dir if a filesystem is mounted there (its device differs from the root's),
// and "" if not; personas with data = true then refuse to start.
func mountedAt(dir string) string {
	a, errA := os.Stat(dir)
	b, errB := os.Stat("/")
	if errA != nil || errB != nil {
		return ""
	}
	sa, okA := a.Sys().(*syscall.Stat_t)
	sb, okB := b.Sys().(*syscall.Stat_t)
	if !okA || !okB || sa.Dev == sb.Dev {
		return ""
	}
	return dir
}
