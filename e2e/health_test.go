//go:build e2e

package e2e

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/bay0/persona"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// TestExecHealthCheckAndNoisyNeighbour is one boot for two items of issue 19.
//
// 19.5, the exec health check (Docker's HEALTHCHECK CMD) run by bay0 inside the persona:
// "checked"'s check is the escape probe itself. bay0 reports it healthy by its own event, and
// the check's line, read back through bay0's status, shows it ran as the host id of the
// persona's user with no capability, no_new_privs and the persona's filter, in a cgroup inside
// the persona's, in its PID, UTS and mount view (its /tmp, its workload as PID 1, no bay0, no
// /persist), with no fd but its output; every attempt past that (namespaces, chroot, setuid,
// mount, ptrace, writing its tree) failed, and the child each check leaves behind was gone by
// the next check. "failing"'s check hangs with a child: bay0 kills it at its timeout, reports
// the persona unhealthy and replaces it.
//
// 19.4, a noisy persona in a real machine: "noisy" writes lines as fast as it can for eight
// seconds; once bay0
// has seen it end, "checked"'s first line is still in its ring, bay0's own ring still holds
// bay0's lines, and noisy's ring is full and bounded: its newest lines within its output budget
// and bay0's notes of how many it dropped past it.
func TestExecHealthCheckAndNoisyNeighbour(t *testing.T) {
	t.Parallel()
	limits := "cpus = 0.3\nmemory = \"48MiB\"\npids = 32\n"
	checked := personaEntry(t, "checked", "probe", []string{"idle", "checked"}, limits+"order = 1\nuser = \"1000:1000\"\n"+
		"[persona.health]\nexec = [\"/bin/probe\", \"check\", \"checked\"]\ninterval = \"5s\"\ntimeout = \"5s\"\nretries = 5\n")
	failing := personaEntry(t, "failing", "probe", []string{"idle", "failing"}, limits+"order = 2\n"+
		"[persona.health]\nexec = [\"/bin/probe\", \"check-hang\"]\ninterval = \"3s\"\ntimeout = \"3s\"\nretries = 2\nstart_period = \"1ms\"\n")
	noisy := personaEntry(t, "noisy", "probe", []string{"flood", "8s"}, limits+"order = 3\nrestart = \"never\"\n")
	img := buildPersonaSpine(t, checked, failing, noisy)
	cfg, sock := withControl(t, machine(makeDisk(t, img, img, nil)))
	v := vmtest.Boot(t, cfg)
	waitUp(t, v, "personas", 1, "a", bootTimeout)
	c := dial(t, sock)

	// The order of these events among themselves is not fixed: each is looked for in all of
	// bay0's lines so far.
	waitSeen(t, v, 2*bootTimeout, event.PersonaHealthy, kv("name", "checked"))
	un := waitSeen(t, v, 2*bootTimeout, event.PersonaUnhealthy, kv("name", "failing"))
	if r := un.Value("reason"); !strings.Contains(r, "2 checks failed in a row") || !strings.Contains(r, "timed out") {
		t.Errorf("failing unhealthy: %q, want two timed-out checks", r)
	}
	// Replaced, and its new instance's check shows what the check wrote before its timeout.
	for deadline := time.Now().Add(bootTimeout); ; time.Sleep(300 * time.Millisecond) {
		f := personaState(t, c, "failing")
		if len(v.Events(event.PersonaStarted, kv("name", "failing"))) >= 2 && f.Restarts >= 1 && strings.Contains(f.HealthOutput, "probe-check: hanging") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("failing: %+v, want replaced, with its check's output", f)
		}
	}
	call(t, c, control.Request{Verb: control.VerbStop, Name: "failing"})
	ended := waitSeen(t, v, 2*bootTimeout, event.PersonaExited, kv("name", "noisy"))
	if r := ended.Value("reason"); r != "exit status 0" {
		t.Errorf("noisy ended: %q", r)
	}

	// Three checks of checked's instance have passed: each saw the leftover child of the one
	// before it gone.
	var p control.PersonaInfo
	for deadline := time.Now().Add(bootTimeout); ; time.Sleep(500 * time.Millisecond) {
		p = personaState(t, c, "checked")
		if n := checkFact(p.HealthOutput, "n"); n != "" && n != "1" && n != "2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("checked's check never ran three times: %+v", p)
		}
	}
	t.Logf("checked's health output: %s", p.HealthOutput)
	hostID := strconv.Itoa(int(persona.IDRange(0)) + 1000)
	want := map[string]string{"uid": hostID, "gid": hostID, "capbnd": "0000000000000000", "nnp": "1", "seccomp": "2",
		"cgroup": "0::/health/check", "pid1": "/bin/probe", "tmp": "true", "others": "0", "fds": "3", "escapes": "0", "leftover": "true", "bad": "[]"}
	for k, w := range want {
		if got := checkFact(p.HealthOutput, k); got != w {
			t.Errorf("check of checked: %s=%q, want %q", k, got, w)
		}
	}
	if p.State != "healthy" || p.Health != "ok" || p.Restarts != 0 {
		t.Errorf("checked: %+v, want healthy, never replaced", p)
	}
	// The check's refused calls are the persona's: its filter refused them, and bay0 found
	// the persona by the check's host uid.
	for deadline := time.Now().Add(bootTimeout); !sawEvent(v, event.PersonaDenied, "calls", "ptrace", kv("name", "checked")); time.Sleep(300 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("bay0 never named checked's check's refused ptrace")
		}
	}

	// 19.4: the flood stayed in noisy's ring.
	if l := logsOf(t, c, "checked"); !containsLine(l, "persona checked: probe: idle: checked up") {
		t.Errorf("checked's ring lost its first line to the flood: %q", l)
	}
	own := logsOf(t, c, "")
	if !hasEvent(own, event.SlotUp, kv("name", "personas")) || !hasEvent(own, event.PersonaStarted, kv("name", "checked")) || containsPrefix(own, "persona noisy: ") {
		t.Errorf("bay0's own ring after the flood: %d lines, want its own early lines and none of noisy's", len(own))
	}
	// noisy's own ring is bounded, and holds its lines in order: those within its output
	// budget, and bay0's notes of how many it dropped past it.
	l := logsOf(t, c, "noisy")
	if len(l) == 0 || len(l) > control.DefaultLogLines {
		t.Fatalf("noisy's ring holds %d lines, want 1..%d", len(l), control.DefaultLogLines)
	}
	first, last, kept, dropped := -1, -1, 0, 0
	for _, line := range l {
		if m := droppedRE.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			dropped += n
			continue
		}
		n := floodLine(line)
		if n <= last {
			t.Errorf("noisy's ring is out of order or holds another's line: %q", line)
			break
		}
		if first < 0 {
			first = n
		}
		last, kept = n, kept+1
	}
	t.Logf("noisy's ring: %d lines, %d of them its own (%d..%d), notes of %d dropped past its budget", len(l), kept, first, last, dropped)
	// Eight seconds of flood pass more lines than a ring holds, even within the budget: the
	// ring is full, its oldest lines pushed out.
	if len(l) != control.DefaultLogLines || first <= 0 || dropped == 0 {
		t.Errorf("noisy's ring: %d lines from flood line %d, %d dropped; want a full ring without its first lines, and drops", len(l), first, dropped)
	}
	v.Kill(t)
	v.NeverEvent(t, event.PersonaUnhealthy, kv("name", "checked"))
}

// waitSeen waits until bay0 has printed an event of kind k with want, anywhere in its lines.
func waitSeen(t *testing.T, v *vmtest.VM, timeout time.Duration, k event.Kind, want ...event.Attr) event.Event {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(200 * time.Millisecond) {
		if es := v.Events(k, want...); len(es) > 0 {
			return es[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("bay0 never printed %s", event.Event{Kind: k, Attrs: want})
		}
	}
}

// checkFact returns the value of key in the probe's check line ("probe-check: n=3 uid=...").
func checkFact(out, key string) string {
	m := regexp.MustCompile(`(?:^|\s)` + regexp.QuoteMeta(key) + `=(\S*)`).FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return m[1]
}

var droppedRE = regexp.MustCompile(`^persona noisy: \((\d+) lines dropped: over the console budget\)$`)

var floodRE = regexp.MustCompile(`^persona noisy: probe: flood line (\d+)$`)

// floodLine is the number of one of noisy's lines, or -1.
func floodLine(l string) int {
	m := floodRE.FindStringSubmatch(l)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// hasEvent reports whether lines hold an event of kind k with want.
func hasEvent(lines []string, k event.Kind, want ...event.Attr) bool {
	for _, l := range lines {
		if e, err := event.Parse(l); err == nil && e.Matches(k, want...) {
			return true
		}
	}
	return false
}
