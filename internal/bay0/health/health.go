// Package health tracks the progress of bay0's supervised loops. The watchdog is fed only while
// every loop has reported progress within the window: a loop that stops progressing anywhere
// stops the feeding, and the hardware resets the machine (Article II §3).
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
	beats map[string]time.Time
}

// New returns a monitor that expects the named loops; each starts as having just beaten.
func New(now time.Time, loops ...string) *Monitor {
	m := &Monitor{beats: map[string]time.Time{}}
	for _, l := range loops {
		m.beats[l] = now
	}
	return m
}

// Beat records progress of a loop. A loop the monitor was not told about is added.
func (m *Monitor) Beat(loop string, now time.Time) {
	m.mu.Lock()
	m.beats[loop] = now
	m.mu.Unlock()
}

// Beater returns a function that records progress of one loop at the current time.
func (m *Monitor) Beater(loop string) func() {
	return func() { m.Beat(loop, time.Now()) }
}

// Check reports nil when every loop beat within window of now, or an error naming the loops
// that did not, the stalest first.
func (m *Monitor) Check(now time.Time, window time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	type stale struct {
		name string
		age  time.Duration
	}
	var bad []stale
	for name, t := range m.beats {
		if age := now.Sub(t); age > window {
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
