package supervise

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/probe"
	"alpinespine.org/spine/internal/format/policy"
)

// checker is a health check whose answer the test sets, per persona.
type checker struct {
	mu      sync.Mutex
	healthy map[string]bool
	targets []probe.Target
	calls   atomic.Int64
}

func (c *checker) set(name string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.healthy[name] = ok
}

func (c *checker) check(_ context.Context, t probe.Target) error {
	c.calls.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.targets = append(c.targets, t)
	// The tests name personas by port: 1 is "web", 2 is "db".
	name := map[int]string{1: "web", 2: "db"}[t.Port]
	if c.healthy[name] {
		return nil
	}
	return errors.New("connection refused")
}

func checked(name string, order, port int, h policy.Health) policy.Persona {
	p := pentry(name, order)
	h.TCP = port
	p.Health = &h
	return p
}

// TestHealthDecidesHealthyAndCommit: a persona with a check is running, not healthy, until
// its check passes, and until then a trial misses it; one without a check is up once running.
func TestHealthDecidesHealthyAndCommit(t *testing.T) {
	l := newFakeLauncher()
	c := &checker{healthy: map[string]bool{}}
	fast := policy.Health{Interval: policy.Duration(100 * time.Millisecond), Timeout: policy.Duration(10 * time.Millisecond)}
	s, console := startChecked(t, l, testPolicy(t, checked("web", 1, 1, fast), pentry("plain", 2)), c.check)
	waitState(t, s, "plain", Running)
	waitState(t, s, "web", Running)
	for c.calls.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	if m := s.Missing(); len(m) != 1 || !strings.HasPrefix(m[0], "persona web running, not healthy yet: starting: connection refused") {
		t.Errorf("Missing = %q", m)
	}
	if !s.AllUp() {
		t.Error("AllUp is false with every persona running")
	}
	c.set("web", true)
	st := waitState(t, s, "web", Healthy)
	if st.Health != "ok" || len(s.Missing()) != 0 {
		t.Errorf("healthy: %+v, missing %q", st, s.Missing())
	}
	if !strings.Contains(console.String(), "bay0: event=persona-healthy name=web ms=") {
		t.Errorf("console:\n%s", console)
	}
	c.mu.Lock()
	tg := c.targets[0]
	c.mu.Unlock()
	if tg.Addr.String() != "127.0.0.1" || tg.PID != l.latest("web").pid || tg.Path != "" {
		t.Errorf("checked %+v", tg)
	}
}

// TestUnhealthyPersonaIsReplaced: past its start period, a persona whose check fails retries
// times in a row is asked to end (its stop signal) and replaced, with the reason in its last exit;
// failures within the start period do not count.
func TestUnhealthyPersonaIsReplaced(t *testing.T) {
	l := newFakeLauncher()
	c := &checker{healthy: map[string]bool{"web": true}}
	h := policy.Health{Interval: policy.Duration(100 * time.Millisecond), Timeout: policy.Duration(10 * time.Millisecond),
		Retries: 2, StartPeriod: policy.Duration(time.Hour)}
	s, console := startChecked(t, l, testPolicy(t, checked("web", 1, 1, h), checked("db", 2, 2, h)), c.check)
	waitState(t, s, "web", Healthy)
	// db never passes, but its start period (an hour) has not passed: it is not replaced.
	c.set("web", false)
	l.waitLaunches(t, "web", 2)
	st := waitState(t, s, "web", Running)
	if st.Restarts != 1 || !strings.HasPrefix(st.LastExit, "replaced: unhealthy: 2 checks failed in a row, the last: connection refused") {
		t.Errorf("status %+v", st)
	}
	if sig := l.instances["web"][0].signalled(); len(sig) != 1 {
		t.Errorf("the unhealthy instance got signals %v, want its stop signal", sig)
	}
	if !strings.Contains(console.String(), "bay0: event=persona-unhealthy name=web") {
		t.Errorf("console:\n%s", console)
	}
	l.mu.Lock()
	db := len(l.instances["db"])
	l.mu.Unlock()
	if db != 1 {
		t.Errorf("db, failing within its start period, was launched %d times", db)
	}
}
