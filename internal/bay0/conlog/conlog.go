// Package conlog carries the console lines of bay0 and of its personas to the serial console
// through bounded per-source queues that one goroutine drains, so that no writer ever waits on
// the console: a 115200-baud UART moves about 11 KiB a second, and PID 1's loops, whose
// progress feeds the watchdog, must not stall behind it.
//
// Each source keeps at most its bound of complete lines; a line that does not fit is dropped
// and counted, and the count is printed ("(N lines dropped)") before the source's next line.
// The drainer serves bay0's own source first, whenever it has a line, then the personas' in
// turn: bay0's lines are never crowded out by a persona's flood.
//
// Until Start, writes go straight to the console, in the writer's goroutine (the boot before
// the personas: the passphrase prompt must not overtake queued lines).
package conlog

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"time"
)

// Default bounds of a source's queue, in lines.
const (
	BayLines     = 1024
	PersonaLines = 64
)

// Mux is the console's single writer.
type Mux struct {
	out     io.Writer
	mu      sync.Mutex
	srcs    []*Source // srcs[0] is bay0's own
	next    int       // round-robin position among the personas' sources
	wake    chan struct{}
	started bool
	idle    *sync.Cond // signalled when every queue is empty
	busy    bool       // the drainer is writing a line
}

// Source is one writer's queue: an io.Writer that never blocks on the console.
type Source struct {
	m       *Mux
	name    string
	max     int
	queue   [][]byte
	partial []byte
	dropped int
}

// New returns a Mux writing to out; bay0's own source is Bay.
func New(out io.Writer) *Mux {
	m := &Mux{out: out, wake: make(chan struct{}, 1)}
	m.idle = sync.NewCond(&m.mu)
	m.srcs = []*Source{{m: m, name: "bay0", max: BayLines}}
	return m
}

// Bay is bay0's own source, served first.
func (m *Mux) Bay() *Source { return m.srcs[0] }

// Source adds a source of at most max queued lines (PersonaLines if max < 1).
func (m *Mux) Source(name string, max int) *Source {
	if max < 1 {
		max = PersonaLines
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &Source{m: m, name: name, max: max}
	m.srcs = append(m.srcs, s)
	return s
}

// Start begins the asynchronous draining; it returns at once.
func (m *Mux) Start() {
	m.mu.Lock()
	if m.started {
		m.mu.Unlock()
		return
	}
	m.started = true
	m.mu.Unlock()
	go m.drain()
}

// Write queues p's complete lines (a trailing part waits for its newline). It never blocks
// on the console and always reports len(p), nil.
func (s *Source) Write(p []byte) (int, error) {
	m := s.m
	m.mu.Lock()
	if !m.started {
		defer m.mu.Unlock()
		m.out.Write(p) // before Start: straight through, in order
		return len(p), nil
	}
	s.partial = append(s.partial, p...)
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		line := append([]byte(nil), s.partial[:i+1]...)
		s.partial = s.partial[i+1:]
		if len(s.queue) >= s.max {
			s.dropped++
			continue
		}
		s.queue = append(s.queue, line)
	}
	if len(s.partial) == 0 {
		s.partial = nil
	}
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// pick takes the next line to write: bay0's first, then the personas' in turn; a source's
// last queued line carries its count of dropped lines after it. Precondition: m.mu held.
func (m *Mux) pick() []byte {
	take := func(s *Source) []byte {
		line := s.queue[0]
		s.queue = s.queue[1:]
		// Lines are dropped only while the queue is full, so they came after every line
		// queued: the count follows the last of them.
		if len(s.queue) == 0 && s.dropped > 0 {
			line = append(line[:len(line):len(line)], fmt.Appendf(nil, "bay0: console: %s: %d lines dropped (console too slow)\n", s.name, s.dropped)...)
			s.dropped = 0
		}
		return line
	}
	if len(m.srcs[0].queue) > 0 {
		return take(m.srcs[0])
	}
	n := len(m.srcs) - 1
	for i := range n {
		s := m.srcs[1+(m.next+i)%n]
		if len(s.queue) > 0 {
			m.next = (m.next + i + 1) % n
			return take(s)
		}
	}
	return nil
}

func (m *Mux) drain() {
	for {
		m.mu.Lock()
		line := m.pick()
		m.busy = line != nil
		if line == nil {
			m.idle.Broadcast()
		}
		m.mu.Unlock()
		if line == nil {
			<-m.wake
			continue
		}
		m.out.Write(line) // a failing console must not stop the drainer
	}
}

// Flush waits until every queued line is written, for at most d (the machine going down).
func (m *Mux) Flush(d time.Duration) {
	done := make(chan struct{})
	go func() {
		m.mu.Lock()
		for m.started && (m.busy || m.pending()) {
			m.idle.Wait()
		}
		m.mu.Unlock()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// pending reports whether any queue holds a line. Precondition: m.mu held.
func (m *Mux) pending() bool {
	for _, s := range m.srcs {
		if len(s.queue) > 0 {
			return true
		}
	}
	return false
}
