//go:build e2e

package e2e

import (
	"strconv"
	"testing"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/vm"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// TestStopWaitsThenKills (issue 19.1): `spine ctl stop` sends the stop signal and a workload
// that ignores it is killed when its stop_timeout is up, not before; at `spine ctl poweroff`
// every persona is asked at once, the one that answers ends by itself, the deaf one is killed
// on time, and the machine powers off inside the watchdog's budget.
func TestStopWaitsThenKills(t *testing.T) {
	t.Parallel()
	img := buildPersonaSpine(t, neighbour(t),
		personaEntry(t, "deaf", "hog", []string{"deaf"}, "cpus = 0.2\nmemory = \"24MiB\"\npids = 16\nstop_timeout = \"3s\"\norder = 2"))
	cfg, sock := withControl(t, machine(makeDisk(t, img, img, nil)))
	v := vmtest.Boot(t, cfg)
	v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "deaf"))
	// The signal is ignored from here on; before, Go's own handler would end the program.
	v.WaitPersona(t, "deaf", "hog: deaf: ignoring SIGTERM", bootTimeout)
	c := dial(t, sock)
	call(t, c, control.Request{Verb: control.VerbStop, Name: "deaf"})
	ended := v.WaitEvent(t, event.PersonaEnded, bootTimeout, kv("name", "deaf"))
	if ms, _ := strconv.Atoi(ended.Value("ms")); ended.Value("killed") != "true" || ended.Value("signal") != "SIGTERM" || ms < 3000 {
		t.Errorf("stop of a workload that ignores SIGTERM: %s, want killed after its 3s stop_timeout", ended)
	}
	call(t, c, control.Request{Verb: control.VerbStart, Name: "deaf"})
	v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "deaf"))
	v.WaitPersona(t, "deaf", "hog: deaf: ignoring SIGTERM", bootTimeout)
	call(t, c, control.Request{Verb: control.VerbPoweroff})
	v.WaitEvent(t, event.PersonasDown, bootTimeout)
	v.WaitEvent(t, event.Halt, bootTimeout, kv("action", "poweroff"))
	v.ExpectOutcome(t, vm.PoweredOff)
	beat := v.Events(event.PersonaEnded, kv("name", "beat"))
	if len(beat) != 1 || beat[0].Value("killed") != "false" {
		t.Errorf("the heartbeat at power off: %v, want one end by itself after SIGTERM", beat)
	}
	deaf := v.Events(event.PersonaEnded, kv("name", "deaf"))
	if len(deaf) != 2 || deaf[1].Value("killed") != "true" {
		t.Errorf("the deaf persona's ends: %v, want the stop's and the power off's, both kills", deaf)
	}
	v.NeverEvent(t, event.WatchdogStarving)
}
