//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"

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
	v.WaitFor(t, "bay0: spine tiny v1 slot a up", bootTimeout)
	v.WaitFor(t, "bay0: halt: reboot: panic: injected fault", bootTimeout)
	v.WaitFor(t, "Linux version", bootTimeout)
	line := v.WaitFor(t, "bay0: last reset:", bootTimeout)
	if !strings.Contains(line, "reboot: panic: injected fault") {
		t.Errorf("the next boot reports %q, want the panic", line)
	}
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
	v.WaitFor(t, "bay0: watchdog: armed, timeout 3s", bootTimeout)
	v.WaitFor(t, "fault injection: main loop hangs", bootTimeout)
	hung := time.Now()
	v.WaitFor(t, "watchdog: not feeding: supervised loop stuck: main silent", bootTimeout)
	v.WaitFor(t, "Linux version", bootTimeout)
	elapsed := time.Since(hung)
	// Silence is noticed after the 2 s window, then the hardware (i6300esb: two stages of the
	// timeout each) resets; TCG adds its own slowness, hence the margin.
	if limit := 2*time.Second + 2*timeout + 10*time.Second; elapsed > limit {
		t.Errorf("the machine reset %s after the loop hung, want within %s", elapsed, limit)
	}
	t.Logf("reset %s after the main loop hung", elapsed.Round(100*time.Millisecond))
	line := v.WaitFor(t, "bay0: last reset:", bootTimeout)
	if !strings.Contains(line, "watchdog: supervised loop stuck: main") {
		t.Errorf("the next boot reports %q, want the stuck loop", line)
	}
	v.Kill(t)
	v.Never(t, "bay0: halt:")
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
	v.WaitFor(t, "bay0: spine tiny v1 slot a up", bootTimeout)
	time.Sleep(4 * time.Second)
	res := v.Kill(t)
	if res.Outcome != vm.Killed {
		t.Fatalf("a release bay0 obeyed bay0.fault=panic: %s", res.Outcome)
	}
	v.Never(t, "fault injection")
	v.Never(t, "bay0: halt:")
}
