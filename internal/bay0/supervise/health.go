package supervise

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"alpinespine.org/spine/internal/bay0/persona"
	"alpinespine.org/spine/internal/bay0/probe"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/policy"
)

// A persona's health check (policy health) is made off the loop, every interval while an
// instance is up, from bay0's side (tcp, http) or inside the persona (exec, persona.Check): its first pass makes it healthy; retries failures in a row
// replace it, as a stuck persona is (Article III §4), but failures within start_period of its
// start do not count until it has been healthy once. A trial Spine commits only once every
// required persona with a check is healthy (Missing).

// checkResult is the outcome of one check of generation gen of a persona, with the tail of
// its output for an exec check.
type checkResult struct {
	name   string
	gen    int
	err    error
	output string
}

// pidfds is an Instance that can name its workload by a new pidfd (persona.Instance).
type pidfds interface {
	DupPidfd() (int, error)
}

// checkTarget is where a persona's check connects: its uplink address, or its loopback.
func checkTarget(p policy.Persona) probe.Target {
	if p.Health == nil {
		return probe.Target{}
	}
	t := probe.Target{Addr: netip.MustParseAddr("127.0.0.1"), Port: p.Health.Port(), Path: p.Health.HTTP}
	if pfx, _ := p.Uplink(); pfx.IsValid() {
		t.Addr = pfx.Addr()
	}
	return t
}

// startChecks starts the checks that are due.
func (s *Supervisor) startChecks(now time.Time) {
	for _, n := range s.names {
		e := s.ps[n]
		if e.health == nil || e.cur == nil || !e.state.up() || e.checking || now.Before(e.nextCheck) {
			continue
		}
		e.checking = true
		gen, timeout := e.gen, time.Duration(e.health.Timeout)
		run := s.checkFunc(e)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			out, err := run(ctx)
			s.checks <- checkResult{name: n, gen: gen, err: err, output: out}
		}()
	}
}

// checkFunc returns one check of e's running instance. It runs on the loop: the instance is
// not being destroyed, so its pidfd can still be taken for an exec check.
func (s *Supervisor) checkFunc(e *entry) func(context.Context) (string, error) {
	if e.health.Exec == nil {
		t := e.target
		t.PID = e.cur.inst.PID()
		return func(ctx context.Context) (string, error) { return "", s.cfg.Check(ctx, t) }
	}
	t := persona.CheckTarget{PID: e.cur.inst.PID(), Pidfd: -1, Cgroup: filepath.Join(e.spec.CgroupParent, e.spec.Name),
		Self: e.spec.Self, Config: e.spec.CheckConfig(e.health.Exec)}
	var err error
	if p, ok := e.cur.inst.(pidfds); ok {
		t.Pidfd, err = p.DupPidfd()
	}
	return func(ctx context.Context) (string, error) {
		if err != nil {
			return "", err
		}
		return s.cfg.Exec(ctx, t)
	}
}

// onCheck takes a check's outcome: healthy at the first pass, replaced after too many
// failures in a row.
func (s *Supervisor) onCheck(r checkResult) {
	e := s.ps[r.name]
	e.checking = false
	if r.gen != e.gen || e.cur == nil || !e.state.up() {
		return // the instance checked is gone
	}
	now := time.Now()
	e.nextCheck = now.Add(time.Duration(e.health.Interval))
	if e.health.Exec != nil {
		e.healthOut = r.output
	}
	if r.err == nil {
		e.fails, e.healthMsg = 0, "ok"
		if e.state == Running {
			e.state = Healthy
			took := now.Sub(e.upSince)
			s.logf("bay0: persona %s healthy %s after its start", r.name, took.Round(time.Millisecond))
			s.emit(event.New(event.PersonaHealthy).With("name", r.name).Int("ms", took.Milliseconds()))
		}
		return
	}
	if e.state == Running && now.Sub(e.upSince) < time.Duration(e.health.StartPeriod) {
		e.healthMsg = "starting: " + r.err.Error()
		return
	}
	e.fails++
	e.healthMsg = fmt.Sprintf("%d failed in a row: %v", e.fails, r.err)
	if e.fails < e.health.Retries {
		return
	}
	reason := fmt.Sprintf("unhealthy: %d checks failed in a row, the last: %v", e.fails, r.err)
	if r.output != "" {
		// The check's own words, bounded, on bay0's line but not in the event.
		s.logf("bay0: persona %s %s; its check said %q; replacing it", r.name, reason, lastBytes(r.output, 200))
	} else {
		s.logf("bay0: persona %s %s; replacing it", r.name, reason)
	}
	s.emit(event.New(event.PersonaUnhealthy).With("name", r.name).With("reason", reason))
	s.stop(r.name, BackingOff, true)
	e.lastExit = "replaced: " + reason
	e.restarts++
	e.delay = 0
	s.launch(r.name)
}

// usage is the last sample of a running instance's CPU and memory use.
type usage struct {
	at         time.Time
	cpuUsec    int64
	cpuPercent float64
	memory     int64
}

// sampleUsage reads every running instance's cpu.stat and memory.current; the CPU share is
// over the time since the previous sample.
func (s *Supervisor) sampleUsage(now time.Time) {
	for _, n := range s.names {
		e := s.ps[n]
		if e.cur == nil || !e.state.up() || e.spec.CgroupParent == "" {
			continue
		}
		cpu, mem, err := readUsage(filepath.Join(e.spec.CgroupParent, e.spec.Name))
		if err != nil {
			continue // an instance that is ending
		}
		if prev := e.usage; !prev.at.IsZero() && now.After(prev.at) && cpu >= prev.cpuUsec {
			e.usage.cpuPercent = float64(cpu-prev.cpuUsec) / float64(now.Sub(prev.at).Microseconds()) * 100
		}
		e.usage.at, e.usage.cpuUsec, e.usage.memory = now, cpu, mem
	}
}

// readUsage reads a cgroup's CPU time (cpu.stat usage_usec) and memory.current.
func readUsage(dir string) (cpuUsec, memory int64, err error) {
	f, err := os.Open(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, 0, err
	}
	st, err := persona.ParseKeyed(f)
	f.Close()
	if err != nil {
		return 0, 0, fmt.Errorf("%s/cpu.stat: %w", dir, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "memory.current"))
	if err != nil {
		return 0, 0, err
	}
	memory, err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("%s/memory.current: %w", dir, err)
	}
	return st["usage_usec"], memory, nil
}

// lastBytes is the end of s, at most n bytes of it.
func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
