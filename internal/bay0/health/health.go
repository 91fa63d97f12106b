// Package health tracks the progress of bay0's supervised loops. The watchdog is fed only while
// every loop has reported progress within its window: a loop that stops progressing anywhere
// stops the feeding, and the hardware resets the machine (Article II §3).
//
// A loop may be waiting for a person (the passphrase prompt): while it says so with Waiting,
// and until its next Beat, it is not held to its window, since a person's pace is no sign of a
// hang; a loop that stops anywhere else is.
package health

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// Monitor records the last time each named loop made progress.
type Monitor struct {
	mu    sync.Mutex
	loops map[string]*loop
}

type loop struct {
	beat    time.Time
	window  time.Duration // 0: the window given to Check
	waiting bool
}

// New returns a monitor that expects the named loops; each starts as having just beaten.
func New(now time.Time, loops ...string) *Monitor {
	m := &Monitor{loops: map[string]*loop{}}
	for _, l := range loops {
		m.loops[l] = &loop{beat: now}
	}
	return m
}

// Beat records progress of a loop and ends its waiting. A loop the monitor was not told about
// is added.
func (m *Monitor) Beat(name string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.get(name)
	l.beat, l.waiting = now, false
}

// Watch (re)starts a loop with its own window: it must beat within window from now on.
func (m *Monitor) Watch(name string, window time.Duration, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.get(name)
	l.beat, l.window, l.waiting = now, window, false
}

// Waiting marks a loop as blocked on a person until its next Beat.
func (m *Monitor) Waiting(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.get(name).waiting = true
}

// Only forgets every loop but name, which is watched with its own window from now on: the
// machine is going down and nothing else is expected to progress.
func (m *Monitor) Only(name string, window time.Duration, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.loops = map[string]*loop{name: {beat: now, window: window}}
}

// Drop forgets a loop that has ended by design (the boot phases, once the system is up).
func (m *Monitor) Drop(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.loops, name)
}

// get returns the loop, adding it. Precondition: m.mu held.
func (m *Monitor) get(name string) *loop {
	l, ok := m.loops[name]
	if !ok {
		l = &loop{}
		m.loops[name] = l
	}
	return l
}

// Beater returns a function that records progress of one loop at the current time.
func (m *Monitor) Beater(name string) func() {
	return func() { m.Beat(name, time.Now()) }
}

// Check reports nil when every loop beat within its window of now (window for a loop without
// its own), or an error naming the loops that did not, the stalest first.
func (m *Monitor) Check(now time.Time, window time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	type stale struct {
		name string
		age  time.Duration
	}
	var bad []stale
	for name, l := range m.loops {
		w := window
		if l.window > 0 {
			w = l.window
		}
		if age := now.Sub(l.beat); age > w && !l.waiting {
			bad = append(bad, stale{name, age})
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Slice(bad, func(i, j int) bool {
		return bad[i].age > bad[j].age || bad[i].age == bad[j].age && bad[i].name < bad[j].name
	})
	msg := ""
	for i, b := range bad {
		if i > 0 {
			msg += ", "
		}
		msg += fmt.Sprintf("%s silent for %s", b.name, b.age.Round(time.Millisecond))
	}
	return fmt.Errorf("supervised loop stuck: %s", msg)
}
