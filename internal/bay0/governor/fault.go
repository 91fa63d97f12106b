package governor

import (
	"os"
	"strings"
	"time"

	"alpinespine.org/spine/internal/format/event"
)

// injectFault, in a test build only (build tag faultinject), obeys bay0.fault=KIND on the
// kernel command line a few seconds after the system is up: "panic" panics the main loop,
// "hang-main" blocks it forever (the watchdog must then reset the machine). Release builds
// compile faultInjection to false and carry none of this behaviour; the audit refuses a bay0
// that contains the fault marker.
func injectFault(g *Governor) {
	if !faultInjection {
		return
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	for _, w := range strings.Fields(string(cmdline)) {
		kind, ok := strings.CutPrefix(w, "bay0.fault=")
		if !ok {
			continue
		}
		g.logf("fault injection armed: %s (%s)", kind, faultMarker)
		g.emit(event.New(event.FaultArmed).With("kind", kind))
		time.Sleep(2 * time.Second)
		switch kind {
		case "panic":
			g.emit(event.New(event.FaultFired).With("kind", kind))
			panic("injected fault: bay0 panics")
		case "hang-main":
			g.logf("fault injection: main loop hangs")
			g.emit(event.New(event.FaultFired).With("kind", kind))
			select {}
		}
	}
}
