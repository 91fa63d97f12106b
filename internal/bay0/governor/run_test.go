package governor

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/halt"
	"alpinespine.org/spine/internal/bay0/mountinfo"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/handoff"
	"alpinespine.org/spine/internal/format/manifest"
	"alpinespine.org/spine/internal/format/policy"
)

// phases is the boot's order, as Run documents it.
var phases = []string{"system", "handoff", "watchdog", "policy", "root", "record", "restore", "persist", "personas", "control"}

// fakeKernel is a machine that records what the phases ask of it; fail makes the named call
// fail.
type fakeKernel struct {
	mu     sync.Mutex
	calls  []string
	fail   string
	dog    *fakeDog
	record *memRecord
}

func newFakeKernel(fail string) *fakeKernel {
	rec := bootctl.Record{Seq: 1, Primary: 0, LastReset: "reboot: operator asked (spine ctl reboot)"}
	rec.Slots[0] = bootctl.Slot{State: bootctl.Good, Version: 1}
	b, err := rec.MarshalBinary()
	if err != nil {
		panic(err)
	}
	dev := &memRecord{b: make([]byte, bootctl.NumCopies*bootctl.RecordSize)}
	copy(dev.b, b)
	return &fakeKernel{fail: fail, dog: &fakeDog{timeout: stage1Timeout}, record: dev}
}

func (k *fakeKernel) call(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls = append(k.calls, name)
	if name == k.fail {
		return errors.New(name + ": injected failure")
	}
	return nil
}

func (k *fakeKernel) called() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.calls)
}

func (k *fakeKernel) MountSystem() error { return k.call("MountSystem") }

func (k *fakeKernel) Handoff() (handoff.Handoff, error) {
	return handoff.Handoff{Slot: 0, Manifest: manifest.Manifest{Name: "demo", Version: 1}, WatchdogFD: 3,
		Phases: []handoff.Phase{{Name: "stage1: setup", MS: 7}}}, k.call("Handoff")
}

func (k *fakeKernel) Watchdog(fd int, timeout time.Duration) (watchdogDevice, error) {
	if fd != 3 || timeout != stage1Timeout {
		return nil, errors.New("watchdog: not stage 1's")
	}
	return k.dog, k.call("Watchdog")
}

func (k *fakeKernel) Policy() (policy.Policy, error) {
	return policy.Policy{Governor: policy.Governor{PassphraseAttempts: 3, WatchdogTimeout: policy.Duration(4 * time.Second),
		HealthWindow: policy.Duration(time.Hour), TrialDeadline: policy.Duration(2 * time.Hour)}}, k.call("Policy")
}

func (k *fakeKernel) Root() (mountinfo.Entry, error) {
	return mountinfo.Entry{FSType: "squashfs", Source: "/dev/dm-0", Options: []string{"ro"}}, k.call("Root")
}

func (k *fakeKernel) Record() (bootctl.Device, error) { return k.record, k.call("Record") }

func (k *fakeKernel) Persist() persistSystem {
	_ = k.call("Persist")
	f := &fakePersist{right: "pw", input: "pw\n"}
	if k.fail == "Persist" {
		f.mountErr = errors.New("mount: EUCLEAN")
	}
	return f
}

func (k *fakeKernel) PersonaHost() (io.Reader, *reaper, error) {
	return strings.NewReader(""), newReaperWith(func() (int, unix.WaitStatus) { return 0, 0 }, nil), k.call("PersonaHost")
}

func (k *fakeKernel) ControlPort() (io.ReadWriter, string, error) {
	return nil, "", errors.Join(k.call("ControlPort"), errors.New("no bay0.ctl port"))
}

// fakeDog is a watchdog that counts its feeds.
type fakeDog struct {
	mu      sync.Mutex
	timeout time.Duration
	feeds   int
}

func (d *fakeDog) SetTimeout(t time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.timeout = t
	return nil
}

func (d *fakeDog) Timeout() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.timeout
}

func (d *fakeDog) Feed() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.feeds++
	return nil
}

// memRecord is an in-memory bay0-state partition.
type memRecord struct {
	mu     sync.Mutex
	b      []byte
	writes int
}

func (m *memRecord) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(p, m.b[off:]), nil
}

func (m *memRecord) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes++
	return copy(m.b[off:], p), nil
}

func (m *memRecord) Sync() error { return nil }

// lockedConsole is a console the tests can read while the governor writes.
type lockedConsole struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (c *lockedConsole) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.Write(p)
}

func (*lockedConsole) Read([]byte) (int, error) { return 0, io.EOF }

// phaseEvents are the names of the phase events among lines, and their errors.
func phaseEvents(lines []string) (names, errs []string) {
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(l, "bay0: event=phase name="); ok {
			names = append(names, strings.Fields(rest)[0])
			if _, e, ok := strings.Cut(rest, " error="); ok {
				errs = append(errs, e)
			}
		}
	}
	return names, errs
}

// TestRunPhasesInOrder: the boot runs its phases in order, each handed what the earlier
// returned (stage 1's watchdog, the policy's timeout, the record's last reset), then governs
// until it is asked to end; the halt duties then include recording the end.
func TestRunPhasesInOrder(t *testing.T) {
	k := newFakeKernel("")
	g := newGovernor(&lockedConsole{}, k)
	asked := &halt.PowerError{Action: halt.Reboot, Reason: "operator asked (test)"}
	g.request(asked)
	if err := g.Run(); err != asked {
		t.Fatalf("Run = %v, want the request it was given", err)
	}
	lines := g.ring.Lines()
	names, errs := phaseEvents(lines)
	if !slices.Equal(names, phases) || len(errs) != 0 {
		t.Errorf("phases %v (errors %v), want %v", names, errs, phases)
	}
	want := []string{"MountSystem", "Handoff", "Watchdog", "Policy", "Root", "Record", "Persist", "PersonaHost", "ControlPort"}
	if got := k.called(); !slices.Equal(got, want) {
		t.Errorf("kernel calls %v, want %v", got, want)
	}
	if k.dog.Timeout() != 4*time.Second {
		t.Errorf("watchdog timeout %s, want the policy's 4s", k.dog.Timeout())
	}
	for _, want := range []string{
		"bay0: event=last-reset reason=",
		"bay0: spine demo v1 slot a up",
		"bay0: event=slot-committed slot=a version=1 min_version=0 earlier=true",
		"bay0: control: no channel: ",
	} {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, want) }) {
			t.Errorf("no line starting %q in:\n%s", want, strings.Join(lines, "\n"))
		}
	}
	if tl := g.timeline.get(); len(tl) != len(phases)+1 || tl[0].Name != "stage1: setup" || tl[1].Name != "system" {
		t.Errorf("timeline %+v, want stage 1's phase first, then the governor's", tl)
	}
	rec, _, err := bootctl.Load(k.record)
	if err != nil || rec.LastReset != bootctl.UncleanReset {
		t.Fatalf("record while running: %+v, %v; want the unclean-reset sentinel", rec, err)
	}
	// feed through the halt, record the end, quiesce the personas. The last kills every
	// process (kill -1) and must not run in a test.
	hooks := g.HaltHooks()
	if len(hooks) != 3 {
		t.Fatalf("%d halt hooks, want 3", len(hooks))
	}
	if err := hooks[1](halt.Reboot, asked.Reason); err != nil {
		t.Fatal(err)
	}
	if rec, _, err = bootctl.Load(k.record); err != nil || rec.LastReset != "reboot: operator asked (test)" {
		t.Errorf("record after the halt: %+v, %v", rec, err)
	}
}

// TestRunStopsAtFailedPhase: a failed phase ends the boot with its error, named in its phase
// event; nothing after it runs, and the halt does only what the phases before it made
// necessary: a machine whose root check fails never writes its record.
func TestRunStopsAtFailedPhase(t *testing.T) {
	for _, c := range []struct {
		fail   string // kernel call that fails
		phase  string // the phase it fails
		hooks  int    // halt hooks then
		writes bool   // the record was written
	}{
		{"MountSystem", "system", 1, false},
		{"Handoff", "handoff", 1, false},
		{"Watchdog", "watchdog", 1, false},
		{"Policy", "policy", 1, false},
		{"Root", "root", 1, false},
		{"Record", "record", 1, false},
		{"Persist", "persist", 2, true},
		{"PersonaHost", "personas", 2, true},
	} {
		t.Run(c.phase, func(t *testing.T) {
			k := newFakeKernel(c.fail)
			g := newGovernor(&lockedConsole{}, k)
			err := g.Run()
			if err == nil {
				t.Fatal("Run succeeded")
			}
			names, errs := phaseEvents(g.ring.Lines())
			if i := slices.Index(phases, c.phase); !slices.Equal(names, phases[:i+1]) || len(errs) != 1 {
				t.Errorf("phases %v (errors %v), want up to %s failed", names, errs, c.phase)
			}
			if calls := k.called(); calls[len(calls)-1] != c.fail {
				t.Errorf("kernel calls %v go past the failed %s", calls, c.fail)
			}
			if n := len(g.HaltHooks()); n != c.hooks {
				t.Errorf("%d halt hooks, want %d", n, c.hooks)
			}
			if (k.record.writes > 0) != c.writes {
				t.Errorf("record written %d times", k.record.writes)
			}
		})
	}
}

// TestPhaseNamesItsHang: a phase that stops progressing is named in the health check that
// starves the watchdog.
func TestPhaseNamesItsHang(t *testing.T) {
	g := newGovernor(&lockedConsole{}, newFakeKernel(""))
	s := &sequence{g: g}
	start := time.Now()
	_, _ = phase(s, "persist", func(progress) (struct{}, error) { return struct{}{}, nil })
	err := g.health.Check(start.Add(PhaseWindow+time.Second), time.Hour)
	if err == nil || !strings.Contains(err.Error(), "phase persist silent") {
		t.Errorf("a stalled persist phase: %v", err)
	}
	s.done()
	if err := g.health.Check(start.Add(time.Hour), time.Hour*2); err != nil {
		t.Errorf("phases still watched once the system is up: %v", err)
	}
}
