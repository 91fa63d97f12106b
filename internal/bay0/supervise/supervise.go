// Package supervise keeps the policy's personas running: it starts them in policy order,
// replaces one that ends (with backoff) by a fresh instance, never repairs one, and carries out
// the operator's start, stop and replace.
//
// One goroutine, Run's loop, owns all state. Launches run beside it, so that neither a slow
// start nor an operator request can stall the loop whose progress the watchdog watches.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"alpinespine.org/spine/internal/bay0/fault"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/denial"
	"alpinespine.org/spine/internal/bay0/persona"
	"alpinespine.org/spine/internal/bay0/probe"
	"alpinespine.org/spine/internal/bay0/seccomp"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/policy"
)

// Instance is one running launch of a persona (*persona.Instance in the governor).
type Instance interface {
	PID() int
	Startup() time.Duration
	// Exited delivers the workload's wait status, once.
	Exited() <-chan unix.WaitStatus
	// OOMKills counts the OOM killer's kills in the instance's cgroup.
	OOMKills() int64
	// Memory samples the instance's memory pressure.
	Memory() (persona.MemoryStat, error)
	// Signal sends sig to the workload (its stop signal, to ask it to end).
	Signal(sig unix.Signal) error
	// Destroy kills whatever is left of the instance and removes its cgroup.
	Destroy() error
}

// Launcher starts instances.
type Launcher interface {
	Launch(s persona.Spec, out io.Writer) (Instance, error)
}

// Kernel is the real Launcher: persona.Start, with children reaped by Spawner.
type Kernel struct {
	Spawner persona.Spawner
}

// Exec runs one exec health check (persona.Check), its children reaped by Spawner.
func (k Kernel) Exec(ctx context.Context, t persona.CheckTarget) (string, error) {
	return persona.Check(ctx, k.Spawner, t)
}

// Launch starts one instance of s.
func (k Kernel) Launch(s persona.Spec, out io.Writer) (Instance, error) {
	in, err := persona.Start(s, k.Spawner, out)
	if err != nil {
		return nil, err
	}
	return in, nil
}

// Backoff spaces out the replacements of a persona that keeps ending.
type Backoff struct {
	// Min is the first delay, doubled at each quick end up to Max.
	Min, Max time.Duration
	// Reset is how long an instance must have run for the next delay to start over at Min.
	Reset time.Duration
}

// DefaultBackoff is 100 ms doubling to 10 s, reset after 30 s up.
func DefaultBackoff() Backoff {
	return Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second, Reset: 30 * time.Second}
}

// next returns the delay before the next start, given the last delay and how long the
// instance ran.
func (b Backoff) next(last, ran time.Duration) time.Duration {
	if last == 0 || ran >= b.Reset {
		return b.Min
	}
	return min(2*last, b.Max)
}

// Config is what a Supervisor needs from the governor.
type Config struct {
	// Console receives the governor's lines about personas, and the personas' own output
	// unless Output is set.
	Console io.Writer
	// Output, if set, gives each persona's output its own writer (called once per persona):
	// the governor's bounded per-source console queue.
	Output   func(name string) io.Writer
	Launcher Launcher
	// SpineRoot is where the Spine is mounted; "/" in the governor.
	SpineRoot string
	// PersistRoot is the mounted /persist, or "" when it is not mounted: a persona with
	// data = true is then refused.
	PersistRoot string
	// CgroupParent is the cgroup v2 directory of the persona leaves; default
	// /sys/fs/cgroup/personas.
	CgroupParent string
	// Backoff defaults to DefaultBackoff().
	Backoff Backoff
	// Tick is the loop's idle period (its progress heartbeat); default 100 ms.
	Tick time.Duration
	// Beat, if set, is called at every iteration of the loop, as Progress is updated.
	Beat func()
	// PressureEvery is how often running personas' memory pressure is sampled; default 1 s.
	PressureEvery time.Duration
	// KernelLog, if set, is the kernel's log (/dev/kmsg, from its end): the seccomp refusals in
	// it are attributed to their personas, logged and shown in Status (package denial).
	KernelLog io.Reader
	// Containment, if set, is called (off the loop) when an ended instance cannot be
	// confirmed gone: its cgroup could not be killed or did not empty in time. The governor
	// resets the machine: uncertain containment is never carried on with (Article VIII §1).
	Containment func(name string, err error)
	// Check makes one TCP or HTTP health check, off the loop; default probe.Check.
	Check func(context.Context, probe.Target) error
	// Exec runs one exec health check, off the loop, and returns the tail of its output;
	// default the Launcher's, if it is Kernel. Without one, a persona with an exec check is
	// refused.
	Exec func(context.Context, persona.CheckTarget) (string, error)
	// Courier is the persona end of the courier channel, given to every instance of the
	// policy's courier persona; without it that persona is refused.
	Courier *os.File
}

// State is where a persona is in its life.
type State string

// The states of a persona.
const (
	Starting State = "starting"
	// Running: the instance is up; with a health check, not yet found healthy.
	Running State = "running"
	// Healthy: the instance is up and its health check passed (and has not failed its
	// retries since).
	Healthy    State = "healthy"
	BackingOff State = "backing-off" // ended; replaced after the backoff delay
	Stopped    State = "stopped"     // by the operator
	Exited     State = "exited"      // ended with restart = "never"
	Refused    State = "refused"     // the policy entry cannot run on this machine
)

// up reports whether the state is an instance up and running.
func (st State) up() bool { return st == Running || st == Healthy }

// Status describes one persona for the control channel.
type Status struct {
	Name     string         `json:"name"`
	State    State          `json:"state"`
	Pid      int            `json:"pid,omitempty"`
	Restarts int            `json:"restarts"`
	LastExit string         `json:"last_exit,omitempty"`
	Limits   persona.Limits `json:"limits"`
	// Denied lists the system calls the persona's filter refused since boot, with counts.
	Denied []string `json:"denied,omitempty"`
	// Health is the last health check's outcome: "" without a check, "ok", or why it
	// failed and how many times in a row.
	Health string `json:"health,omitempty"`
	// HealthOutput is the tail of the last exec check's output (at most
	// persona.MaxCheckOutput bytes, one line).
	HealthOutput string `json:"health_output,omitempty"`
	// CPUUsec is the CPU time the running instance used (cpu.stat usage_usec), CPUPercent its
	// share of one core over the last sample period, MemoryBytes its memory.current.
	CPUUsec     int64   `json:"cpu_usec,omitempty"`
	CPUPercent  float64 `json:"cpu_percent,omitempty"`
	MemoryBytes int64   `json:"memory_bytes,omitempty"`
}

// ErrUnknown is a request for a persona the policy does not have.
var ErrUnknown = errors.New("no such persona")

// ErrRefused is a request to start a persona that cannot run on this machine.
var ErrRefused = errors.New("persona cannot run on this machine")

// Supervisor keeps the personas of one policy.
type Supervisor struct {
	cfg     Config
	console *lockedWriter
	names   []string // policy order
	ps      map[string]*entry

	reqs      chan request
	checks    chan checkResult
	denials   chan denial.Record
	denied    denial.Tracker
	started   chan startResult
	exits     chan *launch
	destroyed chan destroyResult
	// closing: Shutdown was asked; nothing starts any more, and the replies in shutdown wait
	// until every instance is gone.
	closing  bool
	shutdown []chan error
	progress atomic.Int64
	snap     atomic.Pointer[[]Status]
}

type entry struct {
	spec     persona.Spec
	refusal  error
	always   bool
	optional bool      // the policy lets a trial commit without it
	out      io.Writer // where its output goes
	state    State
	cur      *launch // running instance, if any
	gen      int     // generation of the current or pending launch
	// destroying: an ended instance is being killed and removed off the loop; a launch
	// waits for it (deferred), since the new instance reuses the cgroup's name.
	destroying, deferred bool
	pending              string // operator request that arrived while Starting: "stop" or "replace"
	restarts             int
	lastExit             string
	delay                time.Duration
	retryAt              time.Time
	upSince              time.Time
	// stallWindow is the policy's memory_stall; watch samples the running instance.
	stallWindow time.Duration
	watch       *stallWatch
	// health is the policy's check (nil: none) and target where it connects; the running
	// instance's checks are spaced by nextCheck, and fails counts those failed in a row;
	// healthMsg is the last outcome and healthOut the last exec check's output. checking: a
	// check is under way, of this instance or of one before it; a persona has at most one.
	health    *policy.Health
	target    probe.Target
	checking  bool
	nextCheck time.Time
	fails     int
	healthMsg string
	healthOut string
	usage     usage
}

// launch is one instance under watch; its exit status arrives on done.
type launch struct {
	name string
	gen  int
	inst Instance
	done chan struct{}
	ws   unix.WaitStatus
}

type startResult struct {
	name string
	gen  int
	inst Instance
	err  error
}

type request struct {
	verb, name string
	reply      chan error
}

// New prepares a Supervisor for the policy's personas. Each persona's seccomp filter is
// compiled here, once per boot. A persona that cannot run on this machine (data without
// /persist, an uplink) is kept as Refused, with the reason logged when Run starts: the others
// still run.
func New(cfg Config, pol policy.Policy) (*Supervisor, error) {
	if cfg.Launcher == nil || cfg.Console == nil {
		return nil, errors.New("supervisor needs a launcher and a console")
	}
	if cfg.SpineRoot == "" {
		cfg.SpineRoot = "/"
	}
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = DefaultBackoff()
	}
	if cfg.Tick == 0 {
		cfg.Tick = 100 * time.Millisecond
	}
	if cfg.PressureEvery == 0 {
		cfg.PressureEvery = pressureEvery
	}
	if cfg.Check == nil {
		cfg.Check = probe.Check
	}
	if k, ok := cfg.Launcher.(Kernel); ok && cfg.Exec == nil {
		cfg.Exec = k.Exec
	}
	s := &Supervisor{
		cfg:     cfg,
		console: &lockedWriter{w: cfg.Console},
		ps:      map[string]*entry{},
		reqs:    make(chan request),
		checks:  make(chan checkResult, len(pol.Personas)+1),
		denials: make(chan denial.Record, 64),
		started: make(chan startResult),
		exits:   make(chan *launch),
		// Buffered for every persona: a destroyer never waits on the loop.
		destroyed: make(chan destroyResult, len(pol.Personas)+1),
	}
	for i, p := range pol.Personas {
		e := &entry{always: p.Restart != "never", optional: p.Optional, state: BackingOff, stallWindow: time.Duration(p.MemoryStall),
			health: p.Health, target: checkTarget(p)}
		if cfg.Output != nil {
			e.out = cfg.Output(p.Name)
		}
		if e.stallWindow <= 0 {
			e.stallWindow = policy.DefaultMemoryStall
		}
		fb, err := compileFilter(p)
		if err == nil {
			e.spec, err = persona.NewSpec(p, i, cfg.SpineRoot, cfg.PersistRoot, fb)
		}
		// A persona whose filter cannot be built is refused alone: the others, and bay0, run.
		if err == nil && e.spec.Uplink != nil {
			e.spec.Uplink.Siblings = persona.Siblings(pol, p.Name)
		}
		if err == nil && p.Health != nil && p.Health.Exec != nil && cfg.Exec == nil {
			err = errors.New("its health check is exec, and this bay0 cannot run one")
		}
		if err == nil && p.Courier {
			if cfg.Courier == nil {
				err = errors.New("courier = true, but bay0 made no courier channel")
			}
			e.spec.Courier = cfg.Courier
		}
		if e.refusal = err; e.refusal != nil {
			e.state, e.lastExit = Refused, "refused: "+e.refusal.Error()
			e.spec.Name, e.spec.Limits = p.Name, persona.LimitsOf(p)
		}
		if cfg.CgroupParent != "" {
			e.spec.CgroupParent = cfg.CgroupParent
		}
		s.names = append(s.names, p.Name)
		s.ps[p.Name] = e
	}
	s.publish()
	s.progress.Store(time.Now().UnixNano())
	return s, nil
}

// compileFilter builds the persona's seccomp filter, as persona-init receives it.
func compileFilter(p policy.Persona) ([]byte, error) {
	filter, err := seccomp.Compile(seccomp.Options{Syscalls: p.Syscalls, Protocols: p.Protocols})
	if err != nil {
		return nil, fmt.Errorf("seccomp filter: %w", err)
	}
	return filter.MarshalBinary()
}

// Progress is the time of the supervisor loop's last iteration. The loop iterates at least
// every Config.Tick; the watchdog feeder polls this.
func (s *Supervisor) Progress() time.Time { return time.Unix(0, s.progress.Load()) }

// AllUp reports whether every persona is up (running or healthy), or has ended by itself
// with restart = "never". A persona refused, stopped, backing off or starting is not up.
func (s *Supervisor) AllUp() bool {
	for _, st := range *s.snap.Load() {
		if !st.State.up() && st.State != Exited {
			return false
		}
	}
	return true
}

// Missing lists the personas a trial needs that are not up, each with its state and why: the
// reason of a refusal or of the last failed start, or the last failed health check. Up is
// healthy for a persona with a health check, running for one without, or ended by itself
// with restart = "never". It never blocks.
func (s *Supervisor) Missing() []string {
	var out []string
	for _, st := range *s.snap.Load() {
		e := s.ps[st.Name]
		ok := st.State == Healthy || st.State == Exited || st.State == Running && e.health == nil
		if ok || e.optional {
			continue
		}
		m := fmt.Sprintf("persona %s %s", st.Name, st.State)
		switch {
		case st.State == Running:
			m += ", not healthy yet"
			if st.Health != "" {
				m += ": " + st.Health
			}
		case st.LastExit != "":
			m += ": " + st.LastExit
		}
		out = append(out, m)
	}
	return out
}

// Status returns every persona's state, in policy order. It never blocks.
func (s *Supervisor) Status() []Status { return append([]Status(nil), *s.snap.Load()...) }

// Start starts a stopped or ended persona now.
func (s *Supervisor) Start(ctx context.Context, name string) error { return s.ask(ctx, "start", name) }

// Stop kills a persona and keeps it down until Start or Replace.
func (s *Supervisor) Stop(ctx context.Context, name string) error { return s.ask(ctx, "stop", name) }

// Replace kills a persona's instance, if any, and starts a fresh one at once. Nothing of the
// old instance is left: no process, no cgroup, no mount, no tmpfs content.
func (s *Supervisor) Replace(ctx context.Context, name string) error {
	return s.ask(ctx, "replace", name)
}

func (s *Supervisor) ask(ctx context.Context, verb, name string) error {
	r := request{verb: verb, name: name, reply: make(chan error, 1)}
	select {
	case s.reqs <- r:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run starts every persona in policy order, one after the other, then keeps them. It returns
// only when ctx ends.
func (s *Supervisor) Run(ctx context.Context) error {
	queue := []string{}
	for _, n := range s.names {
		if e := s.ps[n]; e.state == Refused {
			s.logf("bay0: persona %s refused: %v", n, e.refusal)
			s.emit(event.New(event.PersonaRefused).With("name", n).With("reason", e.refusal.Error()))
			continue
		}
		queue = append(queue, n)
	}
	if s.cfg.KernelLog != nil {
		go func() {
			_ = denial.Follow(s.cfg.KernelLog, func(r denial.Record) {
				select {
				case s.denials <- r:
				default: // the loop is behind: this one is dropped, as the kernel drops some
				}
			})
		}()
	}
	booting := "" // the policy-order start in flight
	lastSample := time.Now()
	tick := time.NewTicker(s.cfg.Tick)
	defer tick.Stop()
	for {
		s.progress.Store(time.Now().UnixNano())
		if s.cfg.Beat != nil {
			s.cfg.Beat()
		}
		s.endShutdown()
		if booting == "" && len(queue) > 0 && !s.closing {
			booting, queue = queue[0], queue[1:]
			if e := s.ps[booting]; e.state == BackingOff && e.retryAt.IsZero() {
				s.launch(booting)
			} else {
				booting = ""
				continue
			}
		}
		s.publish()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case r := <-s.started:
			if r.name == booting {
				booting = ""
			}
			s.onStarted(r)
		case l := <-s.exits:
			s.onExit(l)
		case d := <-s.destroyed:
			s.onDestroyed(d)
		case r := <-s.reqs:
			if r.verb == "shutdown" {
				s.beginShutdown(r.reply)
			} else {
				r.reply <- s.onRequest(r)
			}
		case r := <-s.denials:
			s.onDenial(r)
		case r := <-s.checks:
			s.onCheck(r)
		case <-tick.C:
			now := time.Now()
			for _, n := range s.names {
				if e := s.ps[n]; e.state == BackingOff && !e.retryAt.IsZero() && !now.Before(e.retryAt) {
					s.launch(n)
				}
			}
			s.startChecks(now)
			if now.Sub(lastSample) >= s.cfg.PressureEvery {
				lastSample = now
				s.sampleUsage(now)
				s.samplePressure(now)
				for _, d := range s.denied.Flush(now) {
					s.reportDenied(d[0], d[1])
				}
			}
		}
	}
}

// launch starts an instance beside the loop; the result comes back on s.started. While the
// previous instance is still being destroyed, the start waits for it.
func (s *Supervisor) launch(name string) {
	e := s.ps[name]
	if s.closing {
		e.state, e.retryAt = Stopped, time.Time{}
		return
	}
	e.gen++
	e.state, e.retryAt, e.pending = Starting, time.Time{}, ""
	if e.destroying {
		e.deferred = true
		return
	}
	s.spawn(name)
}

func (s *Supervisor) spawn(name string) {
	e := s.ps[name]
	gen, spec, out := e.gen, e.spec, e.out
	if out == nil {
		out = s.console
	}
	go func() {
		inst, err := s.cfg.Launcher.Launch(spec, out)
		s.started <- startResult{name: name, gen: gen, inst: inst, err: err}
	}()
}

func (s *Supervisor) onStarted(r startResult) {
	e := s.ps[r.name]
	if r.err != nil {
		e.lastExit = "could not start: " + r.err.Error()
		s.logf("bay0: persona %s could not start: %v", r.name, r.err)
		s.emit(event.New(event.PersonaFailed).With("name", r.name).With("reason", r.err.Error()))
		s.afterEnd(r.name, 0)
		return
	}
	l := &launch{name: r.name, gen: r.gen, inst: r.inst, done: make(chan struct{})}
	go func() {
		l.ws = <-l.inst.Exited()
		close(l.done)
		s.exits <- l
	}()
	e.cur, e.state, e.upSince = l, Running, time.Now()
	e.watch = &stallWatch{window: e.stallWindow, memoryMax: e.spec.Limits.MemoryMax}
	e.nextCheck, e.fails, e.healthMsg, e.healthOut, e.usage = e.upSince, 0, "", "", usage{}
	s.logf("bay0: persona %s started pid %d in %s", r.name, r.inst.PID(), r.inst.Startup().Round(10*time.Microsecond))
	s.emit(event.New(event.PersonaStarted).With("name", r.name).Int("pid", int64(r.inst.PID())).Int("startup_us", r.inst.Startup().Microseconds()))
	switch e.pending {
	case "stop":
		s.stop(r.name, Stopped, true)
	case "replace":
		s.stop(r.name, BackingOff, true)
		s.launch(r.name)
	}
}

// onExit handles the end of an instance that nobody asked to end.
func (s *Supervisor) onExit(l *launch) {
	e := s.ps[l.name]
	if e.cur != l {
		return // ended on request; already handled
	}
	e.cur = nil
	reason := Reason(l.ws, l.inst.OOMKills(), e.spec.Limits)
	e.lastExit = reason
	s.logf("bay0: persona %s exited: %s", l.name, reason)
	s.emit(event.New(event.PersonaExited).With("name", l.name).With("reason", reason))
	s.destroy(l.name, l, "", false)
	s.afterEnd(l.name, time.Since(e.upSince))
}

// destroyResult is the end of a destroy: what is left of the instance is gone (err nil) or
// cannot be confirmed gone.
type destroyResult struct {
	name   string
	reason string // why it ended, for an instance stopped on request
	was    string // the entry's last exit when the destroy began: a newer one is kept
	err    error
	// stop is how a graceful stop went; nil when the instance was killed outright.
	stop *stopReport
}

// stopReport says how an instance answered its stop signal.
type stopReport struct {
	signal unix.Signal
	took   time.Duration
	ended  bool // it ended by itself within its grace period; otherwise it was killed
}

// destroy kills and removes what is left of an ended instance off the loop (it may take up to
// persona.DestroyTimeout and a second more); the result comes back on s.destroyed. When
// graceful, the workload is first sent its stop signal and given its stop timeout to end.
func (s *Supervisor) destroy(name string, l *launch, onRequest string, graceful bool) {
	e := s.ps[name]
	e.destroying = true
	limits, was := e.spec.Limits, e.lastExit
	sig, grace := e.spec.StopSignal, e.spec.StopTimeout
	go func() {
		var stop *stopReport
		if graceful && sig != 0 && grace > 0 {
			stop = s.askToEnd(l, sig, grace)
		}
		oom := l.inst.OOMKills()
		err := l.inst.Destroy()
		if fault.Kind() == "containment" {
			err = errors.Join(err, errors.New("injected fault: the cgroup did not empty"))
		}
		select {
		case <-l.done:
		case <-time.After(time.Second):
			err = errors.Join(err, errors.New("no exit status a second after the kill"))
		}
		d := destroyResult{name: name, was: was, err: err, stop: stop}
		if onRequest != "" {
			d.reason = Reason(l.ws, oom, limits) + onRequest
		}
		if err != nil && s.cfg.Containment != nil {
			s.cfg.Containment(name, err)
		}
		s.destroyed <- d
	}()
}

// askToEnd sends the workload its stop signal and waits up to grace for it to end.
func (s *Supervisor) askToEnd(l *launch, sig unix.Signal, grace time.Duration) *stopReport {
	start := time.Now()
	r := &stopReport{signal: sig}
	if err := l.inst.Signal(sig); err == nil {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-l.done:
			r.ended = true
		case <-t.C:
		}
	}
	r.took = time.Since(start)
	return r
}

func (s *Supervisor) onDestroyed(d destroyResult) {
	e := s.ps[d.name]
	e.destroying = false
	if d.reason != "" && e.lastExit == d.was {
		e.lastExit = d.reason
	}
	if st := d.stop; st != nil {
		name := unix.SignalName(st.signal)
		ev := event.New(event.PersonaEnded).With("name", d.name).With("signal", name).Int("ms", st.took.Milliseconds())
		if st.ended {
			s.logf("bay0: persona %s ended %s after %s", d.name, st.took.Round(time.Millisecond), name)
			ev = ev.With("killed", "false")
		} else {
			s.logf("bay0: persona %s did not end within %s of %s: killed", d.name, st.took.Round(time.Millisecond), name)
			ev = ev.With("killed", "true")
		}
		s.emit(ev)
	}
	if d.err != nil {
		e.lastExit += "; cleanup: " + d.err.Error()
		s.logf("bay0: persona %s: cleanup: %v", d.name, d.err)
		s.emit(event.New(event.PersonaCleanup).With("name", d.name).With("reason", d.err.Error()))
	}
	if e.deferred {
		e.deferred = false
		if s.closing {
			e.state = Stopped
		} else if e.state == Starting {
			s.spawn(d.name)
		}
	}
}

// afterEnd schedules the replacement of an instance that ended (or did not start).
func (s *Supervisor) afterEnd(name string, ran time.Duration) {
	e := s.ps[name]
	switch {
	case e.pending == "stop" || s.closing:
		e.state = Stopped
	case e.pending == "replace":
		s.launch(name)
	case e.always:
		e.delay = s.cfg.Backoff.next(e.delay, ran)
		e.state, e.retryAt = BackingOff, time.Now().Add(e.delay)
		e.restarts++
	default:
		e.state = Exited
	}
	e.pending = ""
}

func (s *Supervisor) onRequest(r request) error {
	e, ok := s.ps[r.name]
	if !ok {
		return fmt.Errorf("%s %q: %w", r.verb, r.name, ErrUnknown)
	}
	if e.state == Refused {
		return fmt.Errorf("%s %q: %w: %v", r.verb, r.name, ErrRefused, e.refusal)
	}
	switch r.verb {
	case "start":
		switch e.state {
		case Running, Healthy:
			return nil
		case Starting:
			e.pending = ""
			return nil
		}
		e.delay = 0
		s.launch(r.name)
	case "stop":
		switch e.state {
		case Running, Healthy:
			s.stop(r.name, Stopped, true)
			s.logf("bay0: persona %s stopped", r.name)
			s.emit(event.New(event.PersonaStopped).With("name", r.name))
		case Starting:
			e.pending = "stop"
		default:
			e.state, e.retryAt = Stopped, time.Time{}
		}
	case "replace":
		switch e.state {
		case Running, Healthy:
			s.stop(r.name, BackingOff, true)
			s.logf("bay0: persona %s replaced", r.name)
			s.emit(event.New(event.PersonaReplaced).With("name", r.name))
			e.delay = 0
			s.launch(r.name)
		case Starting:
			e.pending = "replace"
		default:
			e.delay = 0
			s.launch(r.name)
		}
	default:
		return fmt.Errorf("unknown verb %q", r.verb)
	}
	return nil
}

// stop ends the running instance of name, off the loop: when graceful, its workload is sent
// its stop signal and given its stop timeout to end; then its whole cgroup is killed and
// removed, and its exit status collected. The next launch of name waits for that.
func (s *Supervisor) stop(name string, then State, graceful bool) {
	e := s.ps[name]
	l := e.cur
	e.cur, e.state, e.retryAt = nil, then, time.Time{}
	s.destroy(name, l, " (on request)", graceful)
}

// Shutdown stops every persona at once, as Stop does (stop signal, grace, kill), and returns
// once all are gone, or when ctx ends. Nothing starts after it: the machine is going down.
func (s *Supervisor) Shutdown(ctx context.Context) error { return s.ask(ctx, "shutdown", "") }

func (s *Supervisor) beginShutdown(reply chan error) {
	s.closing = true
	s.shutdown = append(s.shutdown, reply)
	for _, n := range s.names {
		e := s.ps[n]
		switch {
		case e.state.up() && e.cur != nil:
			s.stop(n, Stopped, true)
			s.logf("bay0: persona %s stopping: the machine is going down", n)
		case e.state == Starting && e.deferred:
			e.deferred, e.state = false, Stopped // not spawned yet: never will be
		case e.state == Starting:
			e.pending = "stop" // its start is in flight; stopped once it is up
		case e.state == BackingOff:
			e.state, e.retryAt = Stopped, time.Time{}
		}
	}
}

// endShutdown answers Shutdown once no instance is left or on its way.
func (s *Supervisor) endShutdown() {
	if len(s.shutdown) == 0 {
		return
	}
	for _, n := range s.names {
		if e := s.ps[n]; e.destroying || e.cur != nil || e.state == Starting {
			return
		}
	}
	for _, r := range s.shutdown {
		r <- nil
	}
	s.shutdown = nil
}

// onDenial attributes a refused system call to the persona whose uid range holds the record's
// uid, and logs it within denial.Tracker's limits.
func (s *Supervisor) onDenial(r denial.Record) {
	name := ""
	for _, n := range s.names {
		if e := s.ps[n]; e.refusal == nil && r.UID >= e.spec.UID && r.UID-e.spec.UID < persona.IDBlock {
			name = n
		}
	}
	call := r.Call()
	if r.Killed {
		call += " (killed)"
	}
	if name == "" {
		s.logf("bay0: denied syscall %s to uid %d (%s), no persona's", call, r.UID, r.Comm)
		return
	}
	if line, ok := s.denied.Add(name, call, time.Now()); ok {
		s.reportDenied(name, line)
	}
}

// reportDenied logs a summary of a persona's refused calls, as a line and as an event.
func (s *Supervisor) reportDenied(name, line string) {
	s.logf("bay0: %s", line)
	calls := strings.TrimPrefix(line, "persona "+name+": denied syscall ")
	s.emit(event.New(event.PersonaDenied).With("name", name).With("calls", calls))
}

// samplePressure replaces every running persona that has been stuck at its memory limit for
// its whole stall window.
func (s *Supervisor) samplePressure(now time.Time) {
	for _, n := range s.names {
		e := s.ps[n]
		if !e.state.up() || e.cur == nil || e.watch == nil {
			continue
		}
		st, err := e.cur.inst.Memory()
		if err != nil {
			continue // an instance that is ending; its exit is handled on its own
		}
		verdict, stuck := e.watch.add(now, st)
		if !stuck {
			continue
		}
		s.logf("bay0: persona %s %s; replacing it", n, verdict)
		s.emit(event.New(event.PersonaStuck).With("name", n).With("reason", verdict.String()))
		s.stop(n, BackingOff, false)
		e.lastExit = "replaced: " + verdict.String()
		e.restarts++
		e.delay = 0
		s.launch(n)
	}
}

// Reason says why an instance ended, for the console and Status.
func Reason(ws unix.WaitStatus, oomKills int64, l persona.Limits) string {
	if oomKills > 0 {
		return fmt.Sprintf("killed by the OOM killer (memory.max %d bytes, %d oom kills)", l.MemoryMax, oomKills)
	}
	return persona.Describe(ws)
}

func (s *Supervisor) publish() {
	out := make([]Status, 0, len(s.names))
	for _, n := range s.names {
		e := s.ps[n]
		st := Status{Name: n, State: e.state, Restarts: e.restarts, LastExit: e.lastExit, Limits: e.spec.Limits,
			Denied: s.denied.Summary(n), Health: e.healthMsg, HealthOutput: e.healthOut}
		if st.State == BackingOff && e.retryAt.IsZero() {
			// Not started yet, waiting for its turn in policy order: nothing is backing off.
			st.State = Starting
		}
		if e.cur != nil {
			st.Pid = e.cur.inst.PID()
			st.CPUUsec, st.CPUPercent, st.MemoryBytes = e.usage.cpuUsec, e.usage.cpuPercent, e.usage.memory
		}
		out = append(out, st)
	}
	s.snap.Store(&out)
}

func (s *Supervisor) logf(format string, args ...any) {
	fmt.Fprintf(s.console, format+"\n", args...)
}

// emit prints one event line.
func (s *Supervisor) emit(e event.Event) {
	fmt.Fprintln(s.console, e)
}

// lockedWriter serialises whole lines from the governor and the personas' log pumps.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
