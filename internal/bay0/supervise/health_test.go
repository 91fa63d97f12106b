package supervise

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/persona"
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

// execChecker is an exec health check whose exit the test sets; it records each target, and
// the most checks it ever saw running at once.
type execChecker struct {
	mu       sync.Mutex
	ok       bool
	hold     chan struct{} // if set, every check waits for it to close (or its timeout)
	targets  []persona.CheckTarget
	running  int
	most     int
	finished atomic.Int64
}

func (c *execChecker) exec(ctx context.Context, t persona.CheckTarget) (string, error) {
	c.mu.Lock()
	c.targets = append(c.targets, t)
	c.running++
	c.most = max(c.most, c.running)
	hold, ok := c.hold, c.ok
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running--
		c.mu.Unlock()
		c.finished.Add(1)
	}()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return "PONG (too late)", errors.New("timed out: context deadline exceeded")
		}
	}
	if !ok {
		return "Could not connect to Redis at 127.0.0.1:6379: Connection refused", errors.New("exit status 1")
	}
	return "PONG", nil
}

func (c *execChecker) set(ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ok = ok
}

func execEntry(name string, order int, h policy.Health) policy.Persona {
	p := pentry(name, order)
	h.Exec = []string{"/usr/bin/redis-cli", "ping"}
	p.Health = &h
	p.User = "999:998"
	return p
}

// TestExecCheckDecidesHealthy: an exec check decides healthy as the network kinds do; it is
// run with the persona's own argv, the host ids of its user, its filter and its cgroup leaf,
// and the tail of its output is in Status.
func TestExecCheckDecidesHealthy(t *testing.T) {
	l := newFakeLauncher()
	c := &execChecker{}
	fast := policy.Health{Interval: policy.Duration(100 * time.Millisecond), Timeout: policy.Duration(10 * time.Millisecond)}
	pol := testPolicy(t, execEntry("redis", 1, fast))
	s, console := startConfig(t, l, pol, Config{Exec: c.exec})
	waitState(t, s, "redis", Running)
	for c.finished.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	if m := s.Missing(); len(m) != 1 || !strings.Contains(m[0], "not healthy yet: starting: exit status 1") {
		t.Errorf("Missing = %q", m)
	}
	c.set(true)
	st := waitState(t, s, "redis", Healthy)
	if st.Health != "ok" || st.HealthOutput != "PONG" {
		t.Errorf("healthy: %+v", st)
	}
	if !strings.Contains(console.String(), "bay0: event=persona-healthy name=redis ms=") {
		t.Errorf("console:\n%s", console)
	}
	c.mu.Lock()
	tg := c.targets[0]
	c.mu.Unlock()
	base := persona.IDRange(0)
	cfg := tg.Config
	if tg.PID != l.latest("redis").pid || tg.Cgroup != "/sys/fs/cgroup/personas/redis" || tg.Self != "/bin/persona-init" ||
		cfg.Name != "redis" || strings.Join(cfg.Exec, " ") != "/usr/bin/redis-cli ping" ||
		cfg.UID != base+999 || cfg.GID != base+998 || len(cfg.Seccomp) == 0 {
		t.Errorf("checked %+v", tg)
	}
}

// TestExecCheckFailingIsReplaced: an exec check that keeps failing replaces the persona,
// with its exit in the reason and its output in Status until then.
func TestExecCheckFailingIsReplaced(t *testing.T) {
	l := newFakeLauncher()
	c := &execChecker{}
	h := policy.Health{Interval: policy.Duration(100 * time.Millisecond), Timeout: policy.Duration(10 * time.Millisecond),
		Retries: 2, StartPeriod: policy.Duration(time.Millisecond)}
	s, console := startConfig(t, l, testPolicy(t, execEntry("redis", 1, h)), Config{Exec: c.exec})
	l.waitLaunches(t, "redis", 2)
	st := waitState(t, s, "redis", Running)
	if !strings.HasPrefix(st.LastExit, "replaced: unhealthy: 2 checks failed in a row, the last: exit status 1") {
		t.Errorf("status %+v", st)
	}
	if !strings.Contains(console.String(), "bay0: event=persona-unhealthy name=redis") {
		t.Errorf("console:\n%s", console)
	}
}

// TestExecChecksNeverPileUp: a check that hangs is one check: the next starts only once it has
// ended (at its timeout), even across a replacement of the persona, so at most one check per
// persona ever runs.
func TestExecChecksNeverPileUp(t *testing.T) {
	l := newFakeLauncher()
	c := &execChecker{ok: true, hold: make(chan struct{})}
	h := policy.Health{Interval: policy.Duration(100 * time.Millisecond), Timeout: policy.Duration(100 * time.Millisecond)}
	s, _ := startConfig(t, l, testPolicy(t, execEntry("redis", 1, h)), Config{Exec: c.exec})
	waitState(t, s, "redis", Running)
	for c.finished.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	// A check under way while the persona is replaced: the new instance's first check waits.
	for {
		c.mu.Lock()
		r := c.running
		c.mu.Unlock()
		if r == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.Replace(context.Background(), "redis"); err != nil {
		t.Fatal(err)
	}
	for c.finished.Load() < 5 {
		time.Sleep(time.Millisecond)
	}
	c.mu.Lock()
	most := c.most
	c.mu.Unlock()
	if most != 1 {
		t.Errorf("%d checks of one persona ran at once", most)
	}
	if st := s.Status()[0]; st.State == Healthy {
		t.Errorf("a persona whose checks all timed out is healthy: %+v", st)
	}
}

// TestExecCheckNeedsARunner: a persona with an exec check under a supervisor that cannot run
// one is refused alone, with the reason; the others run.
func TestExecCheckNeedsARunner(t *testing.T) {
	l := newFakeLauncher()
	h := policy.Health{}
	s, _ := start(t, l, testPolicy(t, execEntry("redis", 1, h), pentry("plain", 2)))
	st := waitState(t, s, "redis", Refused)
	if !strings.Contains(st.LastExit, "health check is exec") {
		t.Errorf("status %+v", st)
	}
	waitState(t, s, "plain", Running)
}
