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
	"alpinespine.org/spine/internal/bay0/mountinfo"
	"alpinespine.org/spine/internal/bay0/persist"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/handoff"
	"alpinespine.org/spine/internal/format/policy"
)

// Names of the supervised loops whose progress the watchdog feeding depends on. Until the
// system is up, the boot phase running is one more, named by PhaseLoop.
const (
	LoopMain       = "main"
	LoopSupervisor = "supervisor"
	LoopControl    = "control"
	LoopHalt       = "halt"
)

// PhaseLoop is the supervised loop of the boot phase name: a phase that stops progressing
// starves the watchdog with its own name in the reason.
func PhaseLoop(name string) string { return "phase " + name }

// haltBudget bounds the feeding while the machine goes down.
const haltBudget = 30 * time.Second

// PhaseWindow is how long a boot phase may go without progress before the watchdog is no
// longer fed; with the policy's timeout T, a hang in a phase resets the machine within
// PhaseWindow + T.
const PhaseWindow = 5 * time.Second

// Governor is the running system's authority. Its fields are fixed when it is made; what the
// boot produces (the handoff, the policy, the record, the personas) is returned by each phase
// and handed explicitly to the phases after it, then to the main loop as one running value.
type Governor struct {
	kernel  kernel
	console io.ReadWriter
	log     io.Writer
	health  *health.Monitor
	started time.Time
	// con is the console's single writer: bay0's lines and each persona's go through bounded
	// queues, so no loop waits on the UART. ring keeps bay0's own recent lines for the logs
	// verb; each persona has a ring of its own (personaLogs), so no flood pushes out
	// another's lines.
	con  *conlog.Mux
	ring *control.LogRing
	// timeline is the boot's phases and their durations, stage 1's first.
	timeline timeline
	// duties are what the machine's end must do for what the boot has made so far.
	duties duties
	// fatal carries the end of any supervised goroutine to the main loop.
	fatal chan error
	// pending is a reboot or power off asked for on the control channel, waiting for its
	// answer to leave; requests carries it to the main loop once it has, and asked says the
	// machine ends because someone asked.
	pending  atomic.Pointer[halt.PowerError]
	requests chan *halt.PowerError
	asked    atomic.Bool
	// abrupt is set when the machine ends on a failure: its personas are not asked to stop.
	abrupt atomic.Bool
}

// New returns a governor that talks on console and runs on the Linux kernel.
func New(console io.ReadWriter) *Governor { return newGovernor(console, linuxKernel{}) }

func newGovernor(console io.ReadWriter, k kernel) *Governor {
	ring, con := control.NewLogRing(0, 0), conlog.New(console)
	return &Governor{kernel: k, console: console, con: con, log: io.MultiWriter(con.Bay(), ring), ring: ring,
		fatal:   make(chan error, 4),
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

// running is the system the boot phases produced, handed to the main loop and the control
// channel. Its fields do not change once it is built, but for committed, set once the running
// Spine commits; the record changes behind its own lock.
type running struct {
	boot      handoff.Handoff
	policy    policy.Policy
	dog       *dog
	record    *records
	lastReset string
	personas  *personas
	committed atomic.Bool
}

// Run brings the system up phase by phase and governs it. It returns only with the error that
// ends the machine.
//
// The phases, in order, each handed what the earlier ones returned: system (cgroup v2, /tmp),
// handoff (what stage 1 chose), watchdog (stage 1's armed watchdog, fed from then on), policy
// (and the policy's watchdog timeout), root (the Spine is read-only verity; nothing is written
// before this is known), record (the boot-control record), restore (of a slot an interrupted
// update left half-written), persist (the passphrase and /persist), personas, control. Each is
// logged with its duration and must progress within PhaseWindow, or the watchdog goes unfed
// with the phase's name in the reason.
func (g *Governor) Run() (err error) {
	// The policy and the personas, once their phases have returned them: the halt's graceful
	// stop needs them.
	var (
		pol policy.Policy
		ps  *personas
	)
	// Whatever ends the run, the machine now goes down through halt: feed through it (and
	// through the personas' graceful stop), and let the queued console lines out first, so
	// halt's own lines come after them.
	defer func() {
		g.health.Only(LoopHalt, haltBudget+stopBudget(pol), time.Now())
		g.stopPersonasGracefully(ps, pol, err)
		g.con.Flush(2 * time.Second)
	}()
	s := &sequence{g: g}
	k := g.kernel
	if err := s.step("system", k.MountSystem); err != nil {
		return err
	}
	// MountSystem turned kexec off (or failed the boot): say so, so the closing is checked.
	g.emit(event.New(event.KexecDisabled))
	boot, err := phase(s, "handoff", func(progress) (handoff.Handoff, error) { return k.Handoff() })
	if err != nil {
		return err
	}
	g.timeline.first(boot.Phases...)
	dog, err := phase(s, "watchdog", func(progress) (*dog, error) { return g.adoptWatchdog(boot) })
	if err != nil {
		return err
	}
	pol, err = phase(s, "policy", func(progress) (policy.Policy, error) { return g.loadPolicy(dog) })
	if err != nil {
		return err
	}
	if _, err := phase(s, "root", func(progress) (mountinfo.Entry, error) { return g.checkRoot() }); err != nil {
		return err
	}
	opened, err := phase(s, "record", func(progress) (openedRecord, error) { return g.openRecord(boot) })
	if err != nil {
		return err
	}
	// From here on a starving watchdog and the machine's end are written in the record.
	dog.recordTo(opened.record)
	g.duties.push(g.recordEnd(opened.record, boot.Slot))
	if err := s.step("restore", func() error {
		g.restoreInterruptedUpdate(boot, opened.record, s.progress())
		return nil
	}); err != nil {
		return err
	}
	mounted, err := phase(s, "persist", func(pr progress) (unlocked, error) {
		return unlockWith(g.console, pol, k.Persist(), pr)
	})
	if err != nil {
		return err
	}
	ps, err = phase(s, "personas", func(progress) (*personas, error) { return g.startPersonas(pol, mounted.root) })
	if err != nil {
		return err
	}
	g.duties.push(ps.quiesce)
	r := &running{boot: boot, policy: pol, dog: dog, record: opened.record, lastReset: opened.lastReset, personas: ps}
	r.committed.Store(opened.committed)
	if err := s.step("control", func() error { return g.serveControl(r) }); err != nil {
		return err
	}
	g.health.Beat(LoopMain, time.Now())
	s.done()
	fmt.Fprintln(g.log, UpLine(boot))
	g.emit(UpEvent(boot))
	g.goSafe("reaper", ps.reaper.reapForever)
	if r.committed.Load() {
		rec := r.record.snapshot()
		g.logf("slot %s committed by an earlier boot: takes updates", bootctl.SlotName(boot.Slot))
		g.emit(event.New(event.Committed).With("slot", bootctl.SlotName(boot.Slot)).Uint("version", boot.Manifest.Version).
			Uint("min_version", rec.MinVersion).With("earlier", "true"))
		g.afterCommit()
	}
	return g.mainLoop(r)
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
func (g *Governor) mainLoop(r *running) error {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	// Until every persona is up, look often: personas-up says when the boot ended, and the
	// main tick would make it up to half a second late.
	upTick := time.NewTicker(upPoll)
	defer upTick.Stop()
	injectFault(g)
	allUp := false
	deadline := g.started.Add(time.Duration(r.policy.Governor.TrialDeadline))
	for {
		select {
		case now := <-upTick.C:
			switch {
			case r.personas.sup.AllUp():
				allUp = true
				upTick.Stop()
				g.personasUp(r)
			case now.Sub(g.started) > upPollFor:
				// A persona that does not come up is not waited for this often for ever:
				// the main tick still sees it come up.
				upTick.Stop()
			}
		case err := <-g.fatal:
			g.abrupt.Store(true)
			return err
		case req := <-g.requests:
			g.asked.Store(true)
			return req
		case now := <-tick.C:
			g.health.Beat(LoopMain, now)
			if !allUp && r.personas.sup.AllUp() {
				allUp = true
				upTick.Stop()
				g.personasUp(r)
			}
			if r.committed.Load() || now.Sub(g.started) < time.Duration(r.policy.Governor.HealthWindow) {
				continue
			}
			missing, err := g.commitIfHealthy(r, now)
			if err != nil {
				return err
			}
			if missing != nil && r.trial() && now.After(deadline) {
				slot := bootctl.SlotName(r.boot.Slot)
				reason := fmt.Sprintf("trial of slot %s not healthy after %s: %s", slot,
					time.Duration(r.policy.Governor.TrialDeadline), strings.Join(missing, "; "))
				g.emit(event.New(event.TrialDeadline).With("slot", slot).With("missing", strings.Join(missing, "; ")))
				return &halt.PowerError{Action: halt.Reboot, Reason: reason}
			}
		}
	}
}

// upPoll is how often the main loop asks whether every persona is up, until they are or
// upPollFor has passed since the governor started.
const (
	upPoll    = 20 * time.Millisecond
	upPollFor = 2 * time.Minute
)

// personasUp says that every persona is running, at the kernel uptime when it was seen, and
// gives back the boot's garbage.
func (g *Governor) personasUp(r *running) {
	up := kernelUptime()
	// Boot-time work (reading whole slots, unlocking /persist, compiling the filter) left
	// garbage behind; PID 1 lives for the whole uptime, so give it back now. Its RSS is read
	// after, its uptime before: the personas were up before the free.
	debug.FreeOSMemory()
	rss := selfRSS()
	g.logf("personas up (%s): uptime %s, rss %d KiB", personaStates(r.personas.sup.Status()), up, rss)
	g.emit(event.New(event.PersonasUp).With("uptime", up).Int("rss_kib", int64(rss)))
}

// trial reports whether this boot runs a Spine on trial.
func (r *running) trial() bool {
	return r.record.snapshot().Slots[r.boot.Slot].State == bootctl.Trial
}

// missing lists what keeps the running Spine from committing: bay0's own needs (every
// supervised loop progresses, /persist mounted) and, for a trial, every persona the policy
// does not mark optional, each with the reason it is not running.
func (g *Governor) missing(r *running, now time.Time) []string {
	var out []string
	if err := g.health.Check(now, r.dog.window()); err != nil {
		out = append(out, err.Error())
	}
	if !persist.Mounted() {
		out = append(out, "/persist is not mounted")
	}
	if r.trial() {
		out = append(out, r.personas.sup.Missing()...)
	}
	return out
}

// commitIfHealthy makes the running slot the committed, primary, good slot once nothing is
// missing; otherwise it returns what is.
func (g *Governor) commitIfHealthy(r *running, now time.Time) ([]string, error) {
	if m := g.missing(r, now); len(m) > 0 {
		return m, nil
	}
	slot, v := r.boot.Slot, r.boot.Manifest.Version
	limit := uint8(r.policy.Governor.ResetLimit)
	rec, err := r.record.change(func(rec bootctl.Record) (bootctl.Record, error) { return bootctl.Commit(rec, slot, v, limit) })
	if err != nil {
		return nil, fmt.Errorf("commit slot %s: %w", bootctl.SlotName(slot), err)
	}
	r.committed.Store(true)
	g.logf("slot %s committed: good, primary, min_version %d", bootctl.SlotName(slot), rec.MinVersion)
	g.emit(event.New(event.Committed).With("slot", bootctl.SlotName(slot)).Uint("version", v).Uint("min_version", rec.MinVersion))
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

// request asks the main loop to end the machine; a second request while one is pending is
// dropped.
func (g *Governor) request(pe *halt.PowerError) {
	select {
	case g.requests <- pe:
	default:
	}
}

// HaltHooks are what must happen before the machine goes down, for what the boot has made by
// the time it does: call it when the machine goes down, not before. The watchdog is fed
// through the halt; then, once the record is open, the reason is recorded for the next boot's
// status, and once the personas run, their supervisor is stopped.
func (g *Governor) HaltHooks() []halt.Hook {
	// Going down takes a few bounded seconds (kill, hooks, sync): the watchdog is fed through
	// them, for at most haltBudget, so a clean power off is not cut short by a reset.
	feedThrough := func(halt.Action, string) error {
		g.health.Only(LoopHalt, haltBudget, time.Now())
		g.con.Flush(2 * time.Second)
		return nil
	}
	return append([]halt.Hook{feedThrough}, g.duties.list()...)
}

// recordEnd is the halt duty of an open record: it records why the machine ends. A power off,
// or a reboot the operator asked for, is a clean end: the slot's count of resets in a row
// starts over. Anything else (a panic, a failure, a containment doubt) leaves it raised, so a
// Spine that keeps dying is given up after the policy's limit.
func (g *Governor) recordEnd(rec *records, slot int) halt.Hook {
	return func(action halt.Action, reason string) error {
		return rec.set(func(r bootctl.Record) bootctl.Record {
			why := action.String() + ": " + reason
			if action == halt.PowerOff || g.asked.Load() {
				return bootctl.CleanEnd(r, slot, why)
			}
			return bootctl.MarkReset(r, why)
		})
	}
}

// duties is an append-only list of halt hooks: each phase that makes something the machine's
// end must record or stop pushes its hook once it exists, so halt never looks at what was not
// made.
type duties struct {
	mu    sync.Mutex
	hooks []halt.Hook
}

func (d *duties) push(h halt.Hook) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.hooks = append(d.hooks, h)
}

func (d *duties) list() []halt.Hook {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]halt.Hook(nil), d.hooks...)
}
