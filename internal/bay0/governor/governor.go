// Package governor is bay0 as PID 1 of a running Spine: it finishes mounting the system, unlocks
// /persist, launches the personas, arms the watchdog, and from then on is the only authority on
// the machine. It ends only by returning the error that the halt package turns into a reboot.
package governor

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/bay0/halt"
	"alpinespine.org/spine/internal/bay0/health"
	"alpinespine.org/spine/internal/bay0/persist"
	"alpinespine.org/spine/internal/bay0/supervise"
	"alpinespine.org/spine/internal/bay0/watchdog"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/disk"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/handoff"
	"alpinespine.org/spine/internal/format/policy"
)

// Names of the supervised loops whose progress the watchdog feeding depends on.
const (
	LoopMain       = "main"
	LoopSupervisor = "supervisor"
	LoopControl    = "control"
)

// Governor is the running system's authority.
type Governor struct {
	console io.ReadWriter
	log     io.Writer
	boot    handoff.Handoff
	policy  policy.Policy
	state   *records
	health  *health.Monitor
	wd      *watchdog.Device
	started time.Time
	// lastReset is why the previous boot ended, as recorded then.
	lastReset string
	committed atomic.Bool
	// asked is set when the machine ends because someone asked (spine ctl reboot).
	asked atomic.Bool
	fatal     chan error
	// personasUp reports whether every persona that should run is running; set by startPersonas.
	personasUp func() bool
	// ring keeps bay0's recent log lines for the control channel's logs verb.
	ring *control.LogRing
	// lastFeed is when the watchdog was last fed (unix nanoseconds).
	lastFeed atomic.Int64
	// stopPersonas stops the supervisor from launching anything more; set by startPersonas.
	stopPersonas func()
	// requests carries the operator's reboot and power-off requests to the main loop.
	requests chan *halt.PowerError
	// reaper is the only waiter for children; personas is the persona supervisor (the control
	// channel drives it). Both are set by startPersonas.
	reaper   *reaper
	personas *supervise.Supervisor
}

// New returns a governor that talks on console.
func New(console io.ReadWriter) *Governor {
	ring := control.NewLogRing(0, 0)
	return &Governor{console: console, log: io.MultiWriter(console, ring), ring: ring, fatal: make(chan error, 4),
		started: time.Now(), personasUp: func() bool { return true }, requests: make(chan *halt.PowerError, 1)}
}

// LoadPolicy reads the policy baked into the running Spine.
func LoadPolicy(root string) (policy.Policy, error) {
	f, err := os.Open(root + "/" + policy.Path)
	if err != nil {
		return policy.Policy{}, fmt.Errorf("open policy: %w", err)
	}
	defer f.Close()
	return policy.Parse(f)
}

// UpLine is the console line that says the Spine is up, for people; programs wait for UpEvent.
func UpLine(h handoff.Handoff) string {
	return fmt.Sprintf("bay0: spine %s v%d slot %s up", h.Manifest.Name, h.Manifest.Version, bootctl.SlotName(h.Slot))
}

// UpEvent is the event that says the Spine is up.
func UpEvent(h handoff.Handoff) event.Event {
	return event.New(event.SlotUp).With("slot", bootctl.SlotName(h.Slot)).Uint("version", h.Manifest.Version).With("name", h.Manifest.Name)
}

func (g *Governor) logf(format string, args ...any) {
	fmt.Fprintf(g.log, "bay0: "+format+"\n", args...)
}

// emit prints one event line.
func (g *Governor) emit(e event.Event) {
	fmt.Fprintln(g.log, e)
}

// Run brings the system up and governs it. It returns only with the error that ends the
// machine.
func (g *Governor) Run() error {
	if err := mountSystem(); err != nil {
		return err
	}
	if err := g.validateRoot(); err != nil {
		return err
	}
	var err error
	if g.boot, err = handoff.Read(""); err != nil {
		return err
	}
	if g.policy, err = LoadPolicy(""); err != nil {
		return err
	}
	if err := g.openState(); err != nil {
		return err
	}
	g.restoreInterruptedUpdate()
	if err := unlockPersist(g.console, g.policy); err != nil {
		return err
	}
	g.health = health.New(time.Now(), LoopMain)
	if err := g.startPersonas(); err != nil {
		return err
	}
	if g.wd, err = watchdog.Open(time.Duration(g.policy.Governor.WatchdogTimeout)); err != nil {
		return err
	}
	g.logf("watchdog: armed, timeout %s", g.wd.Timeout())
	g.emit(event.New(event.WatchdogArmed).Uint("timeout_ms", uint64(g.wd.Timeout().Milliseconds())))
	fmt.Fprintln(g.log, UpLine(g.boot))
	g.emit(UpEvent(g.boot))
	if err := g.serveControl(); err != nil {
		return err
	}
	g.goSafe("watchdog feeder", g.feedWatchdog)
	g.goSafe("reaper", g.reaper.reapForever)
	return g.mainLoop()
}

// openState opens the boot-control record, reports why the last boot ended, and records the
// unclean-reset sentinel that a clean end will overwrite.
func (g *Governor) openState() error {
	p, err := disk.FindBlockDevice("/sys", "bay0-state")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", p, err)
	}
	g.state = &records{dev: f}
	if err := g.state.load(); err != nil {
		return err
	}
	g.lastReset = g.state.snapshot().LastReset
	if g.lastReset != "" {
		g.logf("last reset: %s", g.lastReset)
		g.emit(event.New(event.LastReset).With("reason", g.lastReset))
	}
	return g.state.set(func(r bootctl.Record) bootctl.Record { return bootctl.MarkReset(r, bootctl.UncleanReset) })
}

// goSafe runs f in a goroutine; its return or panic ends the machine through Run.
func (g *Governor) goSafe(name string, f func() error) {
	go func() {
		defer func() {
			if r := recover(); r != nil {
				g.fatal <- fmt.Errorf("panic in %s: %v", name, r)
			}
		}()
		err := f()
		if err == nil {
			err = fmt.Errorf("%s stopped", name)
		}
		g.fatal <- fmt.Errorf("%s: %w", name, err)
	}()
}

// mainLoop beats for the watchdog, commits a trial Spine once the system has been healthy for
// the policy's window, and waits for anything fatal.
func (g *Governor) mainLoop() error {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	injectFault(g)
	allUp := false
	for {
		select {
		case err := <-g.fatal:
			return err
		case req := <-g.requests:
			g.asked.Store(true)
			// Give the control channel a moment to send its answer before the machine goes.
			time.Sleep(200 * time.Millisecond)
			return req
		case now := <-tick.C:
			g.health.Beat(LoopMain, now)
			if !allUp && g.personasUp() {
				allUp = true
				// Boot-time work (reading whole slots, unlocking /persist, compiling the filter)
				// left garbage behind; PID 1 lives for the whole uptime, so give it back now.
				debug.FreeOSMemory()
				up, rss := kernelUptime(), selfRSS()
				g.logf("all personas running: uptime %s, rss %d KiB", up, rss)
				g.emit(event.New(event.PersonasUp).With("uptime", up).Int("rss_kib", int64(rss)))
			}
			if !g.committed.Load() && now.Sub(g.started) >= time.Duration(g.policy.Governor.HealthWindow) {
				if err := g.commitIfHealthy(now); err != nil {
					return err
				}
			}
		}
	}
}

// commitIfHealthy makes the running slot the committed, primary, good slot once every
// supervised loop progresses, every persona runs and /persist is mounted.
func (g *Governor) commitIfHealthy(now time.Time) error {
	if err := g.health.Check(now, g.window()); err != nil || !g.personasUp() || !persist.Mounted() {
		return nil
	}
	slot, v := g.boot.Slot, g.boot.Manifest.Version
	r, err := g.state.change(func(r bootctl.Record) (bootctl.Record, error) { return bootctl.Commit(r, slot, v, 0) })
	if err != nil {
		return fmt.Errorf("commit slot %s: %w", bootctl.SlotName(slot), err)
	}
	g.committed.Store(true)
	g.logf("slot %s committed: good, primary, min_version %d", bootctl.SlotName(slot), r.MinVersion)
	g.emit(event.New(event.Committed).With("slot", bootctl.SlotName(slot)).Uint("version", v).Uint("min_version", r.MinVersion))
	return nil
}

// window is how long a supervised loop may stay silent before the watchdog goes unfed.
func (g *Governor) window() time.Duration {
	return max(2*time.Second, g.wd.Timeout()/2)
}

// feedWatchdog feeds the hardware watchdog only while every supervised loop progresses. When a
// loop is stuck it records why and stops feeding: the hardware resets the machine.
func (g *Governor) feedWatchdog() error {
	period := max(250*time.Millisecond, g.wd.Timeout()/4)
	starving := false
	for {
		now := time.Now()
		if err := g.health.Check(now, g.window()); err != nil {
			if !starving {
				starving = true
				g.logf("watchdog: not feeding: %v", err)
				g.emit(event.New(event.WatchdogStarving).With("reason", err.Error()))
				_ = g.state.set(func(r bootctl.Record) bootctl.Record { return bootctl.MarkReset(r, "watchdog: "+err.Error()) })
			}
		} else if !starving {
			if err := g.wd.Feed(); err != nil {
				return err
			}
			g.lastFeed.Store(now.UnixNano())
		}
		time.Sleep(period)
	}
}

// request asks the main loop to end the machine; a second request while one is pending is
// dropped.
func (g *Governor) request(pe *halt.PowerError) {
	select {
	case g.requests <- pe:
	default:
	}
}

// HaltHooks are what must happen before the machine goes down: the reason is recorded for the
// next boot's status.
func (g *Governor) HaltHooks() []halt.Hook {
	// A power off, or a reboot the operator asked for, is a clean end: the slot's count of
	// resets in a row starts over. Anything else (a panic, a failure, a containment doubt)
	// leaves it raised, so a Spine that keeps dying is given up after the policy's limit.
	record := func(action halt.Action, reason string) error {
		if g.state == nil {
			return nil
		}
		return g.state.set(func(r bootctl.Record) bootctl.Record {
			why := action.String() + ": " + reason
			if action == halt.PowerOff || g.asked.Load() {
				return bootctl.CleanEnd(r, g.boot.Slot, why)
			}
			return bootctl.MarkReset(r, why)
		})
	}
	// The supervisor would replace the personas halt has just killed: stop it, then kill
	// whatever it started meanwhile, so nothing holds /persist when it is closed.
	quiesce := func(halt.Action, string) error {
		if g.stopPersonas != nil {
			g.stopPersonas()
			halt.KillAll(2 * time.Second)
		}
		return nil
	}
	return []halt.Hook{record, quiesce}
}
