package governor

import (
	"time"

	"alpinespine.org/spine/internal/bay0/fault"
	"alpinespine.org/spine/internal/format/event"
)

// injectFault, in a test build only (package fault), obeys bay0.fault=panic and hang-main a
// few seconds after the system is up: it panics the main loop, or blocks it forever (the
// watchdog must then reset the machine); crash-main kills bay0 at once.
func injectFault(g *Governor) {
	kind := fault.Kind()
	if kind == "" {
		return
	}
	g.logf("fault injection armed: %s (%s)", kind, fault.Marker)
	g.emit(event.New(event.FaultArmed).With("kind", kind))
	// The console's lines are queued: let them out before the crash, so the test sees it fire.
	fault.CrashAt("main", func() { g.emit(event.New(event.FaultFired).With("kind", kind)); g.con.Flush(2 * time.Second) })
	switch kind {
	case "panic":
		time.Sleep(2 * time.Second)
		g.emit(event.New(event.FaultFired).With("kind", kind))
		panic("injected fault: bay0 panics")
	case "hang-main":
		time.Sleep(2 * time.Second)
		g.logf("fault injection: main loop hangs")
		g.emit(event.New(event.FaultFired).With("kind", kind))
		select {}
	}
}

// hangAt blocks forever at a named point when a test build is told to (bay0.fault=hang-POINT).
func (g *Governor) hangAt(point string) {
	fault.HangAt(point, func() { g.emit(event.New(event.FaultFired).With("kind", "hang-"+point)) })
}
