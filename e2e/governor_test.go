//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/bay0/governor"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/vm"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// Article II §3 and Article VIII: a bay0 that crashes or stops progressing resets the machine;
// there is no degraded mode. The next boot says why the last one ended.

func TestPanicRebootsAndReportsReason(t *testing.T) {
	t.Parallel()
	img := buildSpine(t, spineOpts{faulty: true})
	disk := makeDisk(t, img, img, nil)
	cfg := machine(disk)
	cfg.Cmdline = "bay0.fault=panic"
	cfg.MaxBoots = 2
	v := vmtest.Boot(t, cfg)
	waitUp(t, v, "tiny", 1, "a", bootTimeout)
	wantContains(t, v.WaitEvent(t, event.Halt, bootTimeout, kv("action", "reboot")), "reason", "panic: injected fault")
	v.WaitEvent(t, event.Stage1Start, bootTimeout)
	wantContains(t, v.WaitEvent(t, event.LastReset, bootTimeout), "reason", "reboot: panic: injected fault")
	v.Kill(t)
}

func TestHungLoopStarvesWatchdog(t *testing.T) {
	t.Parallel()
	const timeout = 3 * time.Second
	img := buildSpine(t, spineOpts{faulty: true, governor: `watchdog_timeout = "3s"`})
	disk := makeDisk(t, img, img, nil)
	cfg := machine(disk)
	cfg.Cmdline = "bay0.fault=hang-main"
	cfg.MaxBoots = 2
	v := vmtest.Boot(t, cfg)
	v.WaitEvent(t, event.WatchdogArmed, bootTimeout, kv("timeout_ms", "3000"))
	v.WaitEvent(t, event.FaultFired, bootTimeout, kv("kind", "hang-main"))
	hung := time.Now()
	wantContains(t, v.WaitEvent(t, event.WatchdogStarving, bootTimeout), "reason", "supervised loop stuck: main silent")
	v.WaitBoot(t, bootTimeout)
	elapsed := time.Since(hung)
	// Silence is noticed after the 2 s window, then the hardware (i6300esb: two stages of the
	// timeout each) resets; TCG adds its own slowness, hence the margin.
	if limit := 2*time.Second + 2*timeout + 10*time.Second; elapsed > limit {
		t.Errorf("the machine reset %s after the loop hung, want within %s", elapsed, limit)
	}
	t.Logf("reset %s after the main loop hung", elapsed.Round(100*time.Millisecond))
	wantContains(t, v.WaitEvent(t, event.LastReset, bootTimeout), "reason", "watchdog: supervised loop stuck: main")
	v.Kill(t)
	v.NeverEvent(t, event.Halt)
}

// TestReleaseBuildHasNoFaultInjection: the audit refuses a test build, and a release bay0 does
// not carry the fault code at all.
func TestReleaseBuildHasNoFaultInjection(t *testing.T) {
	t.Parallel()
	img := buildSpine(t, spineOpts{})
	disk := makeDisk(t, img, img, nil)
	cfg := machine(disk)
	cfg.Cmdline = "bay0.fault=panic"
	v := vmtest.Boot(t, cfg)
	waitUp(t, v, "tiny", 1, "a", bootTimeout)
	// A test build fires its fault 2 s into the main loop; the idle persona's fourth
	// heartbeat comes later than that.
	v.WaitPersona(t, "idle", "heartbeat 4 from", bootTimeout)
	res := v.Kill(t)
	if res.Outcome != vm.Killed {
		t.Fatalf("a release bay0 obeyed bay0.fault=panic: %s", res.Outcome)
	}
	v.Never(t, "fault injection")
	v.NeverEvent(t, event.FaultArmed)
	v.NeverEvent(t, event.Halt)
}

// TestPersonaCannotForgeEvents (Article II §1, one authority): a persona prints bay0 event
// lines every way it can; the console carries them only behind its own name, so no line
// parses as an event, and bay0's own events go on.
func TestPersonaCannotForgeEvents(t *testing.T) {
	t.Parallel()
	v := bootPersonas(t, personaEntry(t, "forge", "hog", []string{"forge"},
		"cpus = 0.5\nmemory = \"32MiB\"\npids = 16\nrestart = \"never\""))
	v.WaitPersona(t, "forge", "hog: forge: done", bootTimeout)
	v.Kill(t)
	if n := v.CountPersona("forge", "slot=forged"); n < 8 {
		t.Errorf("only %d forged lines reached the console, want the persona's attempts to be there", n)
	}
	for i, l := range v.Machine().Lines() {
		if e, err := event.Parse(l); err == nil && strings.Contains(e.String(), "forged") {
			t.Errorf("console line %d is a forged event: %q", i+1, l)
		}
		if strings.Contains(l, "slot=forged") && !strings.HasPrefix(l, vmtest.PersonaPrefix("forge")) {
			t.Errorf("console line %d carries the persona's text without its name in front: %q", i+1, l)
		}
	}
}

// TestPhaseHangResetsAndTrialFallsBack (Article II §3): the watchdog stage 1 armed stays fed
// only while the governor's current phase progresses. A trial Spine whose governor hangs in
// the passphrase prompt loop, in the persona start or in the control channel resets the
// machine within the timeout plus the phase window, and the boot law falls back to the
// last-known-good Spine, with no outside power cycle.
func TestPhaseHangResetsAndTrialFallsBack(t *testing.T) {
	t.Parallel()
	good := buildSpine(t, spineOpts{})
	const timeout = 3 * time.Second
	hung := buildSpine(t, spineOpts{version: 2, faulty: true, governor: `watchdog_timeout = "3s"`})
	for _, point := range []string{"unlock", "personas", "control"} {
		t.Run(point, func(t *testing.T) {
			t.Parallel()
			disk := makeDisk(t, good, hung, func(r *bootctl.Record) {
				r.Primary = 1
				r.Slots[1].State, r.Slots[1].TriesLeft = bootctl.Trial, 1
			})
			cfg := machine(disk)
			sock := ""
			if point == "control" {
				cfg, sock = withControl(t, cfg)
			}
			cfg.Cmdline = "bay0.fault=hang-" + point
			cfg.MaxBoots = 2
			cfg.Timeout = 3 * bootTimeout
			v := vmtest.Boot(t, cfg)
			if point == "control" {
				waitUp(t, v, "tiny", 2, "b", bootTimeout)
				c := dial(t, sock)
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
					defer cancel()
					c.Call(ctx, control.Request{Verb: control.VerbStatus}) // never answered
				}()
			}
			v.WaitEvent(t, event.FaultFired, bootTimeout, kv("kind", "hang-"+point))
			hungAt := time.Now()
			stuck := v.WaitEvent(t, event.WatchdogStarving, bootTimeout)
			// The reason names the phase that hung (the prompt loop is in the persist phase).
			want := map[string]string{"unlock": governor.PhaseLoop("persist") + " silent",
				"personas": governor.PhaseLoop("personas") + " silent", "control": governor.LoopControl + " silent"}[point]
			wantContains(t, stuck, "reason", want)
			v.WaitBoot(t, bootTimeout)
			resetWithin(t, time.Since(hungAt), governor.PhaseWindow+timeout)
			waitUp(t, v, "tiny", 1, "a", bootTimeout)
			v.Kill(t)
			v.NeverEvent(t, event.Halt)
			rec := record(t, disk)
			if rec.Slots[1].State != bootctl.Bad {
				t.Errorf("slot b after its hung trial: %+v", rec.Slots[1])
			}
		})
	}
}

// TestTrialDeadlineRevertsHalfUpTrial (Article II §3, no degraded mode): a trial whose
// required persona can never start (an uplink on a machine without a network card) is
// reported with the reason in status, never commits, and at its deadline bay0 reboots and
// the boot law reverts to the last-known-good Spine, which takes updates again. Its other
// persona runs but never passes its health check (issue 19.5): it is replaced after its
// retries, and named at the deadline as not healthy.
func TestTrialDeadlineRevertsHalfUpTrial(t *testing.T) {
	t.Parallel()
	good := buildSpine(t, spineOpts{})
	web := fmt.Sprintf("[[persona]]\nname = \"web\"\nexec = [\"/bin/heartbeat\"]\ncpus = 0.1\nmemory = \"16MiB\"\npids = 8\n"+
		"network = \"uplink\"\naddress = \"10.0.2.15/24\"\n[persona.source]\ndir = %q\n", filepath.Join(fx.dir, "tiny-tree"))
	// sick runs, but its health check never passes (nothing listens on its port): it is
	// replaced once its start period is over, and it too keeps the trial from committing.
	sick := fmt.Sprintf("[[persona]]\nname = \"sick\"\nexec = [\"/bin/heartbeat\"]\ncpus = 0.1\nmemory = \"16MiB\"\npids = 8\n"+
		"[persona.health]\ntcp = 9\ninterval = \"1s\"\nretries = 2\nstart_period = \"3s\"\n[persona.source]\ndir = %q\n", filepath.Join(fx.dir, "tiny-tree"))
	half := buildSpine(t, spineOpts{version: 2, personas: web + sick, governor: quickHealth + "\ntrial_deadline = \"20s\""})
	disk := makeDisk(t, good, half, func(r *bootctl.Record) {
		r.Primary = 1
		r.Slots[1].State, r.Slots[1].TriesLeft = bootctl.Trial, 1
	})
	cfg, sock := withControl(t, machine(disk))
	cfg.MaxBoots = 2
	cfg.Timeout = 4 * bootTimeout
	v := vmtest.Boot(t, cfg)
	waitUp(t, v, "tiny", 2, "b", bootTimeout)
	c := dial(t, sock)
	var st control.StatusInfo
	if err := call(t, c, control.Request{Verb: control.VerbStatus}).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Committed || !strings.Contains(strings.Join(st.Missing, "\n"), "persona web") {
		t.Errorf("status of the half-up trial: committed %v, missing %q; want the web persona named", st.Committed, st.Missing)
	}
	if s := find(st.Personas, "sick"); s.State != "running" && s.State != "starting" || s.Health == "ok" {
		t.Errorf("status of sick: %+v, want running and not healthy", s)
	}
	if len(st.Boot) == 0 || st.Boot[0].Name != "stage1: setup" {
		t.Errorf("status has no boot timeline: %+v", st.Boot)
	}
	c.Close()
	wantContains(t, v.WaitEvent(t, event.PersonaUnhealthy, bootTimeout, kv("name", "sick")), "reason", "2 checks failed in a row")
	deadline := v.WaitEvent(t, event.TrialDeadline, bootTimeout, kv("slot", "b"))
	wantContains(t, deadline, "missing", "persona web")
	wantContains(t, deadline, "missing", "persona sick")
	wantContains(t, v.WaitEvent(t, event.Halt, bootTimeout, kv("action", "reboot")), "reason", "not healthy")
	waitUp(t, v, "tiny", 1, "a", bootTimeout)
	v.WaitEvent(t, event.Committed, bootTimeout, kv("slot", "a"))
	v.Kill(t)
	v.NeverEvent(t, event.Committed, kv("slot", "b"))
	if rec := record(t, disk); rec.Slots[1].State != bootctl.Bad || rec.Primary != 0 {
		t.Errorf("record after the deadline: %+v", rec)
	}
}

// TestUncertainContainmentResets: when bay0 cannot confirm that a persona's processes are gone
// (a test build of bay0 whose supervisor is told the cgroup did not empty after cgroup.kill),
// the machine resets rather than carrying on with a persona that may still run (Article VIII
// §1), and the next boot says why.
func TestUncertainContainmentResets(t *testing.T) {
	t.Parallel()
	img := buildSpine(t, spineOpts{faulty: true})
	disk := makeDisk(t, img, img, nil)
	cfg, sock := withControl(t, machine(disk))
	cfg.Cmdline = "bay0.fault=containment"
	cfg.MaxBoots = 2
	v := vmtest.Boot(t, cfg)
	waitUp(t, v, "tiny", 1, "a", bootTimeout)
	v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "idle"))
	c := dial(t, sock)
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	_, _ = c.Call(ctx, control.Request{Verb: control.VerbReplace, Name: "idle"})
	c.Close()
	halted := v.WaitEvent(t, event.Halt, bootTimeout, kv("action", "reboot"))
	wantContains(t, halted, "reason", "containment: persona idle")
	v.WaitEvent(t, event.Stage1Start, bootTimeout)
	wantContains(t, v.WaitEvent(t, event.LastReset, bootTimeout), "reason", "containment")
	v.Kill(t)
}
