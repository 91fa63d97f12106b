package governor

import (
	"sync"
	"time"

	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/handoff"
)

// sequence runs the boot's phases one after the other. loop is the supervised loop of the
// phase running, or of the last one run: it stays watched until the next phase starts or the
// system is up, so even the code between two phases is held to a window.
type sequence struct {
	g    *Governor
	loop string
}

// phase runs one named boot phase and returns what it produced: it must progress within
// PhaseWindow (or what it allows itself through its progress), and its end is logged with its
// duration and kept in the timeline.
func phase[T any](s *sequence, name string, f func(progress) (T, error)) (T, error) {
	g := s.g
	start := time.Now()
	if s.loop != "" {
		g.health.Drop(s.loop)
	}
	s.loop = PhaseLoop(name)
	g.health.Watch(s.loop, PhaseWindow, start)
	v, err := f(s.progress())
	d := time.Since(start)
	g.timeline.add(handoff.Phase{Name: name, MS: d.Milliseconds()})
	e := event.New(event.Phase).With("name", name).Int("ms", d.Milliseconds())
	if err != nil {
		e = e.With("error", err.Error())
	}
	g.emit(e)
	return v, err
}

// step is a phase that produces nothing but its success.
func (s *sequence) step(name string, f func() error) error {
	_, err := phase(s, name, func(progress) (struct{}, error) { return struct{}{}, f() })
	return err
}

// done ends the boot: its phases are no longer watched.
func (s *sequence) done() {
	s.g.health.Drop(s.loop)
	s.loop = ""
}

// progress is how the phase running reports that it is alive.
func (s *sequence) progress() progress {
	g, loop := s.g, s.loop
	return progress{
		beat:    func() { g.health.Watch(loop, PhaseWindow, time.Now()) },
		waiting: func() { g.health.Waiting(loop) },
		allow:   func(d time.Duration) { g.health.Watch(loop, d, time.Now()) },
		hangAt:  g.hangAt,
	}
}

// progress is how a boot phase reports that it is alive.
type progress struct {
	// beat: a step is done; the phase is held to its window again.
	beat func()
	// waiting: blocked on a person until the next beat.
	waiting func()
	// allow: the next step may take up to d before the next beat.
	allow func(d time.Duration)
	// hangAt is the fault-injection point of a test build.
	hangAt func(point string)
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
