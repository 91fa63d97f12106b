// Package governor is bay0 as PID 1 of a running Spine: it finishes mounting the system, unlocks
// /persist, launches the personas, arms the watchdog, and from then on is the only authority on
// the machine. It ends only by returning the error that the halt package turns into a reboot.
package governor

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"alpinespine.org/spine/internal/bay0/conlog"
	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/bay0/fault"
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

// Names of the supervised loops whose progress the watchdog feeding depends on. LoopBoot is
// the boot itself: each phase must progress within its window until the system is up.
const (
	LoopMain       = "main"
	LoopSupervisor = "supervisor"
	LoopControl    = "control"
	LoopBoot       = "boot"
	LoopHalt       = "halt"
)

// haltBudget bounds the feeding while the machine goes down.
const haltBudget = 30 * time.Second

// PhaseWindow is how long a boot phase may go without progress before the watchdog is no
// longer fed; with the policy's timeout T, a hang in a phase resets the machine within
// PhaseWindow + T.
const PhaseWindow = 5 * time.Second

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
	// abrupt is set when the machine ends on a failure: its personas are not asked to stop.
	abrupt atomic.Bool
	fatal  chan error
	// con is the console's single writer: bay0's lines and each persona's go through bounded
	// queues, so no loop waits on the UART. ring and personaRing keep recent lines for the
	// logs verb, bay0's apart, so a persona's flood never pushes bay0's own lines out.
	con         *conlog.Mux
	ring        *control.LogRing
	personaRing *control.LogRing
	// lastFeed is when the watchdog was last fed (unix nanoseconds; 0: not yet).
	lastFeed atomic.Int64
	// pending is a reboot or power off that waits for its answer to leave the control
	// channel; requests carries it to the main loop.
	pending  atomic.Pointer[halt.PowerError]
	requests chan *halt.PowerError
	// timeline is the boot's phases and their durations, stage 1's first.
	timeline timeline
	// reaper is the only waiter for children; personas is the persona supervisor, and
	// stopPersonas stops it. All three are set by the personas phase, before the control
	// channel (their only other user) starts.
	reaper       *reaper
	personas     *supervise.Supervisor
	stopPersonas func()
}

// New returns a governor that talks on console.
func New(console io.ReadWriter) *Governor {
	ring, con := control.NewLogRing(0, 0), conlog.New(console)
	return &Governor{console: console, con: con, log: io.MultiWriter(con.Bay(), ring), ring: ring,
		personaRing: control.NewLogRing(0, 0), fatal: make(chan error, 4),
		started: time.Now(), health: health.New(time.Now()), requests: make(chan *halt.PowerError, 1)}
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

// Run brings the system up phase by phase and governs it. It returns only with the error that
// ends the machine.
//
// The phases, in order: system (cgroup v2, /tmp), handoff (what stage 1 chose, and its armed
// watchdog, which is fed from then on), policy (and the policy's watchdog timeout), root (the
// Spine is read-only verity), record (the boot-control record), persist (the passphrase and
// /persist), personas, control. Each is logged with its duration and must progress within
// PhaseWindow, or the watchdog goes unfed and names the phase.
func (g *Governor) Run() (err error) {
	// Whatever ends the run, the machine now goes down through halt: feed through it (and
	// through the personas' graceful stop), and let the queued console lines out first, so
	// halt's own lines come after them.
	defer func() {
		g.health.Only(LoopHalt, haltBudget+g.stopBudget(), time.Now())
		g.stopPersonasGracefully(err)
		g.con.Flush(2 * time.Second)
	}()
	if err := g.phase("system", mountSystem); err != nil {
		return err
	}
	if err := g.phase("handoff", func() (err error) { g.boot, err = handoff.Read(""); return err }); err != nil {
		return err
	}
	g.timeline.first(g.boot.Phases...)
	if err := g.phase("watchdog", g.adoptWatchdog); err != nil {
		return err
	}
	if err := g.phase("policy", g.loadPolicy); err != nil {
		return err
	}
	if err := g.phase("root", g.validateRoot); err != nil {
		return err
	}
	if err := g.phase("record", g.openState); err != nil {
		return err
	}
	if err := g.phase("restore", func() error { g.restoreInterruptedUpdate(); return nil }); err != nil {
		return err
	}
	pr := progress{
		beat:    func() { g.health.Watch(LoopBoot, PhaseWindow, time.Now()) },
		waiting: func() { g.health.Waiting(LoopBoot) },
		allow:   func(d time.Duration) { g.health.Watch(LoopBoot, d, time.Now()) },
		hangAt:  g.hangAt,
	}
	if err := g.phase("persist", func() error { return unlockPersist(g.console, g.policy, pr) }); err != nil {
		return err
	}
	if err := g.phase("personas", g.startPersonas); err != nil {
		return err
	}
	if err := g.phase("control", g.serveControl); err != nil {
		return err
	}
	g.health.Beat(LoopMain, time.Now())
	g.health.Drop(LoopBoot)
	fmt.Fprintln(g.log, UpLine(g.boot))
	g.emit(UpEvent(g.boot))
	g.goSafe("reaper", g.reaper.reapForever)
	if g.committed.Load() {
		r := g.state.snapshot()
		g.logf("slot %s committed by an earlier boot: takes updates", bootctl.SlotName(g.boot.Slot))
		g.emit(event.New(event.Committed).With("slot", bootctl.SlotName(g.boot.Slot)).Uint("version", g.boot.Manifest.Version).
			Uint("min_version", r.MinVersion).With("earlier", "true"))
		g.afterCommit()
	}
	return g.mainLoop()
}

// adoptWatchdog takes over the watchdog stage 1 armed (or, booted without one, opens it) and
// starts feeding it while the boot progresses.
func (g *Governor) adoptWatchdog() error {
	var err error
	if g.boot.WatchdogFD >= 0 {
		g.wd, err = watchdog.Adopt(g.boot.WatchdogFD, stage1Timeout)
	} else {
		g.wd, err = watchdog.Open(stage1Timeout)
	}
	if err != nil {
		return err
	}
	g.goSafe("watchdog feeder", g.feedWatchdog)
	return nil
}

// stage1Timeout is the watchdog's timeout until the policy is read (stage1.WatchdogTimeout).
const stage1Timeout = 10 * time.Second

func (g *Governor) loadPolicy() error {
	var err error
	if g.policy, err = LoadPolicy(""); err != nil {
		return err
	}
	if err := g.wd.SetTimeout(time.Duration(g.policy.Governor.WatchdogTimeout)); err != nil {
		return err
	}
	g.logf("watchdog: armed, timeout %s", g.wd.Timeout())
	g.emit(event.New(event.WatchdogArmed).Uint("timeout_ms", uint64(g.wd.Timeout().Milliseconds())))
	return nil
}

// phase runs one named boot phase: it must progress within PhaseWindow (or what the phase
// allows itself), and its end is logged with its duration and kept in the timeline.
func (g *Governor) phase(name string, f func() error) error {
	start := time.Now()
	g.health.Watch(LoopBoot, PhaseWindow, start)
	err := f()
	d := time.Since(start)
	g.timeline.add(handoff.Phase{Name: name, MS: d.Milliseconds()})
	e := event.New(event.Phase).With("name", name).Int("ms", d.Milliseconds())
	if err != nil {
		e = e.With("error", err.Error())
	}
	g.emit(e)
	return err
}

// timeline is the boot's phases, safe for the control channel to read.
type timeline struct {
	mu     sync.Mutex
	phases []handoff.Phase
}

func (t *timeline) add(p ...handoff.Phase) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.phases = append(t.phases, p...)
}

// first puts p before the phases added so far (stage 1's, read by the handoff phase).
func (t *timeline) first(p ...handoff.Phase) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.phases = append(append([]handoff.Phase(nil), p...), t.phases...)
}

func (t *timeline) get() []handoff.Phase {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]handoff.Phase(nil), t.phases...)
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
	// A good primary slot was committed by an earlier boot: it takes updates from the start,
	// whatever its personas do, so an operator can always update out of it.
	rec := g.state.snapshot()
	if s := rec.Slots[g.boot.Slot]; s.State == bootctl.Good && rec.Primary == g.boot.Slot {
		g.committed.Store(true)
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

// mainLoop beats for the watchdog, commits the running Spine once the system has been healthy
// for the policy's window, gives up a trial that misses its deadline, and waits for anything
// fatal or asked for.
func (g *Governor) mainLoop() error {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	injectFault(g)
	allUp := false
	deadline := g.started.Add(time.Duration(g.policy.Governor.TrialDeadline))
	for {
		select {
		case err := <-g.fatal:
			g.abrupt.Store(true)
			return err
		case req := <-g.requests:
			g.asked.Store(true)
			return req
		case now := <-tick.C:
			g.health.Beat(LoopMain, now)
			if !allUp && g.personas.AllUp() {
				allUp = true
				// Boot-time work (reading whole slots, unlocking /persist, compiling the filter)
				// left garbage behind; PID 1 lives for the whole uptime, so give it back now.
				debug.FreeOSMemory()
				up, rss := kernelUptime(), selfRSS()
				g.logf("all personas running: uptime %s, rss %d KiB", up, rss)
				g.emit(event.New(event.PersonasUp).With("uptime", up).Int("rss_kib", int64(rss)))
			}
			if g.committed.Load() || now.Sub(g.started) < time.Duration(g.policy.Governor.HealthWindow) {
				continue
			}
			missing, err := g.commitIfHealthy(now)
			if err != nil {
				return err
			}
			if missing != nil && g.trial() && now.After(deadline) {
				reason := fmt.Sprintf("trial of slot %s not healthy after %s: %s", bootctl.SlotName(g.boot.Slot),
					time.Duration(g.policy.Governor.TrialDeadline), strings.Join(missing, "; "))
				g.emit(event.New(event.TrialDeadline).With("slot", bootctl.SlotName(g.boot.Slot)).With("missing", strings.Join(missing, "; ")))
				return &halt.PowerError{Action: halt.Reboot, Reason: reason}
			}
		}
	}
}

// trial reports whether this boot runs a Spine on trial.
func (g *Governor) trial() bool {
	return g.state.snapshot().Slots[g.boot.Slot].State == bootctl.Trial
}

// missing lists what keeps the running Spine from committing: bay0's own needs (every
// supervised loop progresses, /persist mounted) and, for a trial, every persona the policy
// does not mark optional, each with the reason it is not running.
func (g *Governor) missing(now time.Time) []string {
	var out []string
	if err := g.health.Check(now, g.window()); err != nil {
		out = append(out, err.Error())
	}
	if !persist.Mounted() {
		out = append(out, "/persist is not mounted")
	}
	if g.trial() {
		out = append(out, g.personas.Missing()...)
	}
	return out
}

// commitIfHealthy makes the running slot the committed, primary, good slot once nothing is
// missing; otherwise it returns what is.
func (g *Governor) commitIfHealthy(now time.Time) ([]string, error) {
	if m := g.missing(now); len(m) > 0 {
		return m, nil
	}
	slot, v := g.boot.Slot, g.boot.Manifest.Version
	limit := uint8(g.policy.Governor.ResetLimit)
	r, err := g.state.change(func(r bootctl.Record) (bootctl.Record, error) { return bootctl.Commit(r, slot, v, limit) })
	if err != nil {
		return nil, fmt.Errorf("commit slot %s: %w", bootctl.SlotName(slot), err)
	}
	g.committed.Store(true)
	g.logf("slot %s committed: good, primary, min_version %d", bootctl.SlotName(slot), r.MinVersion)
	g.emit(event.New(event.Committed).With("slot", bootctl.SlotName(slot)).Uint("version", v).Uint("min_version", r.MinVersion))
	g.afterCommit()
	return nil, nil
}

// afterCommit runs once the running Spine is committed (by this boot, or before it).
func (g *Governor) afterCommit() {
	if fault.Kind() == "panic-after-commit" {
		g.goSafe("fault injection", func() error {
			time.Sleep(10 * time.Second)
			g.emit(event.New(event.FaultFired).With("kind", "panic-after-commit"))
			panic("injected fault: bay0 dies after its commit")
		})
	}
}

// window is how long a supervised loop may stay silent before the watchdog goes unfed.
func (g *Governor) window() time.Duration {
	return max(2*time.Second, g.wd.Timeout()/2)
}

// feedWatchdog feeds the hardware watchdog only while every supervised loop progresses. When a
// loop is stuck it records why and stops feeding: the hardware resets the machine.
func (g *Governor) feedWatchdog() error {
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
		// The period follows the timeout, which the policy phase changes.
		time.Sleep(max(250*time.Millisecond, g.wd.Timeout()/4))
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
	// Going down takes a few bounded seconds (kill, hooks, sync): the watchdog is fed through
	// them, for at most haltBudget, so a clean power off is not cut short by a reset.
	feedThrough := func(halt.Action, string) error {
		g.health.Only(LoopHalt, haltBudget, time.Now())
		g.con.Flush(2 * time.Second)
		return nil
	}
	// The supervisor would replace the personas halt has just killed: stop it, then kill
	// whatever it started meanwhile, so nothing holds /persist when it is closed.
	quiesce := func(halt.Action, string) error {
		if g.stopPersonas != nil {
			// Set by the personas phase; a halt before it has nothing to stop.
			g.stopPersonas()
			halt.KillAll(2 * time.Second)
		}
		return nil
	}
	return []halt.Hook{feedThrough, record, quiesce}
}
