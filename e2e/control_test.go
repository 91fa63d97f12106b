//go:build e2e

package e2e

import (
	"alpinespine.org/spine/internal/host/ctlclient"
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/vm"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// personaState asks the governor for one persona's status.
func personaState(t *testing.T, c *ctlclient.Client, name string) control.PersonaInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := c.Call(ctx, control.Request{Verb: control.VerbPersonas})
	if err != nil {
		t.Fatalf("personas: %v", err)
	}
	var r control.PersonasResult
	if err := resp.Decode(&r); err != nil {
		t.Fatal(err)
	}
	for _, p := range r.Personas {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("personas has no %q: %+v", name, r.Personas)
	return control.PersonaInfo{}
}

// waitState polls until the persona reaches state.
func waitState(t *testing.T, c *ctlclient.Client, name, state string) control.PersonaInfo {
	t.Helper()
	var p control.PersonaInfo
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		if p = personaState(t, c, name); p.State == state {
			return p
		}
	}
	t.Fatalf("persona %s stayed %q, want %q", name, p.State, state)
	return p
}

func call(t *testing.T, c *ctlclient.Client, req control.Request) control.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := c.Call(ctx, req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Verb, req.Name, err)
	}
	return resp
}

// TestControlChannel drives the governor through its control channel (Article II §1): status,
// personas, stop, start, replace, logs, a malformed and an oversized request, and a clean
// power off; a persona meanwhile finds no trace of the channel.
func TestControlChannel(t *testing.T) {
	t.Parallel()
	img := buildPersonaSpine(t,
		neighbour(t),
		personaEntry(t, "probe", "probe", []string{"probe"}, "cpus = 0.5\nmemory = \"48MiB\"\npids = 64\norder = 2"))
	disk := makeDisk(t, img, img, nil)
	cfg, sock := withControl(t, machine(disk))
	v := vmtest.Boot(t, cfg)
	waitUp(t, v, "personas", 1, "a", bootTimeout)
	v.WaitPersona(t, "probe", "probe: done", 2*bootTimeout)
	if n := v.CountPersona("probe", "probe: hidden /dev/vport1p1: ok"); n != 1 {
		t.Errorf("the probe saw the control port (%d ok lines)", n)
	}
	c := dial(t, sock)

	var st control.StatusInfo
	if err := call(t, c, control.Request{Verb: control.VerbStatus}).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Spine != "personas" || st.Version != 1 || st.Slot != "a" || !st.PersistMounted || !st.Watchdog.Enabled || len(st.Slots) != 2 {
		t.Errorf("status: %+v", st)
	}

	before := waitState(t, c, "beat", "running")
	call(t, c, control.Request{Verb: control.VerbStop, Name: "beat"})
	waitState(t, c, "beat", "stopped")
	call(t, c, control.Request{Verb: control.VerbStart, Name: "beat"})
	started := waitState(t, c, "beat", "running")
	if started.PID == 0 {
		t.Errorf("a started persona has no pid: %+v", started)
	}
	call(t, c, control.Request{Verb: control.VerbReplace, Name: "beat"})
	replaced := waitState(t, c, "beat", "running")
	if replaced.PID == started.PID && replaced.Restarts == started.Restarts {
		t.Errorf("replace left the same instance: before %+v after %+v", started, replaced)
	}
	if before.Limits.CPUMax == "" || before.Limits.PidsMax != "16" {
		t.Errorf("limits not reported: %+v", before.Limits)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Call(ctx, control.Request{Verb: control.VerbStop, Name: "nobody"}); err == nil {
		t.Error("stopping an unknown persona succeeded")
	}

	// Garbage and an oversized line on the raw channel each get an error; the governor keeps
	// serving. QEMU's socket takes one client at a time: hang up first.
	c.Close()
	raw, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(raw)
	for _, bad := range []string{"not json\n", `{"v":1,"id":7,"verb":"exec","name":"sh"}` + "\n", strings.Repeat("x", control.MaxRequestLine+10) + "\n"} {
		if _, err := raw.Write([]byte(bad)); err != nil {
			t.Fatal(err)
		}
		_ = raw.SetReadDeadline(time.Now().Add(20 * time.Second))
		line, err := br.ReadString('\n')
		if err != nil || !strings.Contains(line, `"ok":false`) {
			t.Errorf("answer to a bad line %.30q: %q, %v", bad, line, err)
		}
	}
	raw.Close()
	c = dial(t, sock)
	var logs control.LogsResult
	if err := call(t, c, control.Request{Verb: control.VerbLogs}).Decode(&logs); err != nil {
		t.Fatal(err)
	}
	up := false
	for _, l := range logs.Lines {
		if e, err := event.Parse(l); err == nil && e.Matches(event.SlotUp, kv("slot", "a"), kv("name", "personas")) {
			up = true
		}
	}
	if !up {
		t.Errorf("logs lack the slot-up event: %d lines", len(logs.Lines))
	}
	// Issue 19.4: bay0's own lines apart, and each persona's in a ring of its own.
	for _, l := range logs.Lines {
		if strings.HasPrefix(l, "persona ") {
			t.Errorf("bay0's own logs hold a persona's line %q", l)
			break
		}
	}
	if l := logsOf(t, c, "probe"); !containsLine(l, "persona probe: probe: done") || containsPrefix(l, "persona beat: ") {
		t.Errorf("logs probe: %d lines, want its own and only its own", len(l))
	}
	if l := logsOf(t, c, "beat"); len(l) == 0 || containsPrefix(l, "persona probe: ") {
		t.Errorf("logs beat: %q", l)
	}
	lctx, lcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer lcancel()
	if _, err := c.Call(lctx, control.Request{Verb: control.VerbLogs, Name: "nobody"}); err == nil {
		t.Error("logs of an unknown persona succeeded")
	}
	// Issue 19.5: status names each persona with its state and its cgroup's use.
	if err := call(t, c, control.Request{Verb: control.VerbStatus}).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if beat := find(st.Personas, "beat"); beat.State != "running" || beat.MemoryBytes <= 0 || beat.CPUUsec <= 0 || beat.PID == 0 {
		t.Errorf("status of beat: %+v, want running with its memory and CPU use", beat)
	}

	call(t, c, control.Request{Verb: control.VerbPoweroff})
	v.ExpectOutcome(t, vm.PoweredOff)
	if !sawEvent(v, event.Halt, "reason", "operator asked", kv("action", "poweroff")) {
		t.Error("bay0 never said it powers off as the operator asked")
	}
	for _, want := range []event.Kind{event.PersistClosed} {
		if len(v.Events(want)) != 1 {
			t.Errorf("bay0 never printed event %s", want)
		}
	}
}

// logsOf returns the lines a persona's ring holds.
func logsOf(t *testing.T, c *ctlclient.Client, name string) []string {
	t.Helper()
	var l control.LogsResult
	if err := call(t, c, control.Request{Verb: control.VerbLogs, Name: name}).Decode(&l); err != nil {
		t.Fatal(err)
	}
	return l.Lines
}

func containsLine(lines []string, substr string) bool {
	for _, l := range lines {
		if strings.Contains(l, substr) {
			return true
		}
	}
	return false
}

func containsPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// find returns the persona named in a status.
func find(ps []control.PersonaInfo, name string) control.PersonaInfo {
	for _, p := range ps {
		if p.Name == name {
			return p
		}
	}
	return control.PersonaInfo{}
}
