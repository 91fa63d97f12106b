package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
)

func TestWaves(t *testing.T) {
	cases := []struct {
		n, canary, percent int
		want               [][]int
	}{
		{1, 1, 50, [][]int{{0}}},
		{2, 1, 50, [][]int{{0}, {1}}},
		{3, 1, 50, [][]int{{0}, {1, 2}}},
		{5, 1, 25, [][]int{{0}, {1, 2}, {3, 4}}},
		{10, 2, 10, [][]int{{0, 1}, {2}, {3, 4, 5, 6, 7, 8, 9}}},
		{4, 0, 0, [][]int{{0}, {1}, {2, 3}}},
		{3, 5, 50, [][]int{{0, 1, 2}}},
	}
	for _, c := range cases {
		if got := Waves(c.n, c.canary, c.percent); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Waves(%d, %d, %d) = %v, want %v", c.n, c.canary, c.percent, got, c.want)
		}
	}
}

func TestParseInventory(t *testing.T) {
	inv, err := ParseInventory([]byte("[[machine]]\nname = \"a\"\ncontrol = \"/run/a.sock\"\n[[machine]]\nname = \"b\"\ncontrol = \"tcp://127.0.0.1:7001\"\n"))
	if err != nil || len(inv.Machines) != 2 || inv.Machines[1].Control != "tcp://127.0.0.1:7001" {
		t.Fatalf("inventory %+v, %v", inv, err)
	}
	for doc, want := range map[string]string{
		"":                            "no [[machine]]",
		"[[machine]]\nname = \"a\"\n": "no control line",
		"[[machine]]\nname = \"a b\"\ncontrol = \"x\"\n":                                           "name",
		"[[machine]]\nname = \"a\"\ncontrol = \"x\"\n[[machine]]\nname = \"a\"\ncontrol = \"y\"\n": "twice",
		"[[machine]]\nname = \"a\"\ncontrol = \"x\"\nport = 3\n":                                   "port",
	} {
		if _, err := ParseInventory([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseInventory(%q) = %v, want an error containing %q", doc, err, want)
		}
	}
}

// fakeMachine plays a machine's control line: an update stages the target, a reboot brings
// it back after a few polls either committed on it, or reverted, or stuck on trial.
type fakeMachine struct {
	mu       sync.Mutex
	name     string
	spine    string
	version  uint64
	trial    bool   // running an uncommitted Spine
	outcome  string // what the next reboot leads to: "commit", "revert", "stuck"
	staged   uint64
	booted   time.Time
	down     int // status calls that fail while it reboots
	oldAfter int // status calls still answered by the old boot after a reboot request
	updates  int
	log      *[]string
	logMu    *sync.Mutex
}

func (f *fakeMachine) Status(context.Context) (control.StatusInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.oldAfter > 0 {
		f.oldAfter--
		return control.StatusInfo{Spine: f.spine, Version: f.version, Slot: "a", Committed: true, UptimeMS: 3_600_000}, nil
	}
	if f.down > 0 {
		f.down--
		return control.StatusInfo{}, errors.New("no answer")
	}
	up := uint64(time.Since(f.booted).Milliseconds())
	return control.StatusInfo{Spine: f.spine, Version: f.version, Slot: "b", Committed: !f.trial, UptimeMS: up,
		Missing: []string{"health window"}, Slots: []control.SlotInfo{{Slot: "b", State: "bad", Reason: "trial used its tries"}}}, nil
}

func (f *fakeMachine) Update(_ context.Context, _ string, progress func(sent, total int64)) (control.UpdateResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logMu.Lock()
	*f.log = append(*f.log, "update "+f.name)
	f.logMu.Unlock()
	f.updates++
	for i := int64(0); i <= 4; i++ {
		progress(i*25, 100)
	}
	f.staged = 2
	return control.UpdateResult{Name: f.spine, Version: 2, Slot: "b"}, nil
}

func (f *fakeMachine) Fetch(ctx context.Context, source string) (control.UpdateResult, error) {
	f.logMu.Lock()
	*f.log = append(*f.log, "fetch "+f.name+" "+source)
	f.logMu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updates++
	f.staged = 2
	return control.UpdateResult{Name: f.spine, Version: 2, Slot: "b"}, nil
}

func (f *fakeMachine) Reboot(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.booted = time.Now()
	f.down = 2
	f.oldAfter = 1
	switch f.outcome {
	case "commit":
		f.version, f.trial = f.staged, false
	case "stuck":
		f.version, f.trial = f.staged, true
	case "revert":
		// the trial failed and the old Spine is back, committed
	}
	return nil
}

func (f *fakeMachine) Close() error { return nil }

type fakeFleet struct {
	machines map[string]*fakeMachine
	inv      Inventory
	log      []string
	logMu    sync.Mutex
}

func newFleet(outcomes ...string) *fakeFleet {
	ff := &fakeFleet{machines: map[string]*fakeMachine{}}
	for i, o := range outcomes {
		name := fmt.Sprintf("m%d", i+1)
		ff.machines[name] = &fakeMachine{name: name, spine: "demo", version: 1, outcome: o, booted: time.Now().Add(-time.Hour), log: &ff.log, logMu: &ff.logMu}
		ff.inv.Machines = append(ff.inv.Machines, Machine{Name: name, Control: "fake"})
	}
	return ff
}

func (ff *fakeFleet) connect(_ context.Context, m Machine) (Line, error) {
	if f, ok := ff.machines[m.Name]; ok {
		return f, nil
	}
	return nil, errors.New("no route")
}

func (ff *fakeFleet) options(state string) Options {
	return Options{Target: Target{Image: "demo-v2.spine", Name: "demo", Version: 2, RootHash: "00"}, Canary: 1, Percent: 50,
		Gate: 2 * time.Second, Poll: time.Millisecond, StatePath: state, Connect: ff.connect}
}

func phases(ps []Progress) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.Machine+"="+string(p.Phase))
	}
	return strings.Join(s, " ")
}

func TestRolloutSucceeds(t *testing.T) {
	ff := newFleet("commit", "commit", "commit", "commit")
	var reports []Progress
	opts := ff.options(filepath.Join(t.TempDir(), "state.json"))
	opts.Report = func(p Progress) { reports = append(reports, p) }
	got, err := Run(context.Background(), ff.inv, opts)
	if err != nil {
		t.Fatal(err)
	}
	if s := phases(got); s != "m1=done m2=done m3=done m4=done" {
		t.Fatalf("final: %s", s)
	}
	if ff.log[0] != "update m1" {
		t.Fatalf("the canary was not first: %v", ff.log)
	}
	// The canary's wave reported done before any other machine started updating.
	canaryDone, otherStart := -1, -1
	for i, p := range reports {
		if p.Machine == "m1" && p.Phase == Done && canaryDone < 0 {
			canaryDone = i
		}
		if p.Machine != "m1" && p.Phase == Updating && otherStart < 0 {
			otherStart = i
		}
	}
	if canaryDone < 0 || otherStart < canaryDone {
		t.Fatalf("canary done at report %d, another machine started at %d", canaryDone, otherStart)
	}
	// Rerunning is a no-op: every machine is done.
	if _, err := Run(context.Background(), ff.inv, opts); err != nil {
		t.Fatal(err)
	}
	if len(ff.log) != 4 {
		t.Fatalf("a resumed, finished rollout updated again: %v", ff.log)
	}
}

func TestRolloutHaltsAtRevertingCanaryAndResumes(t *testing.T) {
	ff := newFleet("revert", "commit", "commit")
	state := filepath.Join(t.TempDir(), "state.json")
	opts := ff.options(state)
	got, err := Run(context.Background(), ff.inv, opts)
	if !errors.Is(err, ErrHalted) || !strings.Contains(err.Error(), "m1") {
		t.Fatalf("Run = %v, want a halt naming m1", err)
	}
	if s := phases(got); s != "m1=failed m2=pending m3=pending" {
		t.Fatalf("final: %s", s)
	}
	if !strings.Contains(got[0].Detail, "reverted") || !strings.Contains(got[0].Detail, "trial used its tries") {
		t.Errorf("m1's failure says %q", got[0].Detail)
	}
	if ff.machines["m2"].updates+ff.machines["m3"].updates != 0 {
		t.Fatal("machines after the failed canary were updated")
	}
	// Resuming does not silently walk past the failure.
	if _, err := Run(context.Background(), ff.inv, opts); !errors.Is(err, ErrHalted) || !strings.Contains(err.Error(), "--retry-failed") {
		t.Fatalf("resume after a failure = %v", err)
	}
	if ff.machines["m1"].updates != 1 {
		t.Fatal("the resume touched the failed machine")
	}
	// The owner fixed what was wrong: the retry finishes the rollout.
	ff.machines["m1"].outcome = "commit"
	opts.RetryFailed = true
	got, err = Run(context.Background(), ff.inv, opts)
	if err != nil {
		t.Fatal(err)
	}
	if s := phases(got); s != "m1=done m2=done m3=done" {
		t.Fatalf("after the retry: %s", s)
	}
}

func TestRolloutThroughCouriers(t *testing.T) {
	ff := newFleet("commit", "commit")
	opts := ff.options("")
	opts.Target.Source = "oci://registry.example/spines/demo@sha256:" + strings.Repeat("ab", 32)
	if _, err := Run(context.Background(), ff.inv, opts); err != nil {
		t.Fatal(err)
	}
	for _, l := range ff.log {
		if !strings.HasPrefix(l, "fetch ") || !strings.HasSuffix(l, opts.Target.Source) {
			t.Fatalf("with a source, machines fetch it through their couriers: %v", ff.log)
		}
	}
}

func TestRolloutGateDeadline(t *testing.T) {
	ff := newFleet("stuck", "commit")
	opts := ff.options("")
	opts.Gate = 50 * time.Millisecond
	got, err := Run(context.Background(), ff.inv, opts)
	if !errors.Is(err, ErrHalted) || got[0].Phase != Failed || !strings.Contains(got[0].Detail, "not committed on v2 within") || got[1].Phase != Pending {
		t.Fatalf("Run = %v, %+v", err, got)
	}
}

func TestRolloutLeavesWhatItMustNotTouch(t *testing.T) {
	ff := newFleet("commit", "commit", "commit")
	ff.machines["m1"].version = 2 // already there
	ff.machines["m2"].version = 3 // ahead
	got, err := Run(context.Background(), ff.inv, ff.options(""))
	if err != nil {
		t.Fatal(err)
	}
	if s := phases(got); s != "m1=done m2=skipped m3=done" || ff.machines["m1"].updates+ff.machines["m2"].updates != 0 {
		t.Fatalf("final %s, updates %d %d", s, ff.machines["m1"].updates, ff.machines["m2"].updates)
	}

	ff = newFleet("commit", "commit")
	ff.machines["m1"].spine = "other"
	if _, err := Run(context.Background(), ff.inv, ff.options("")); !errors.Is(err, ErrHalted) || !strings.Contains(err.Error(), `runs Spine "other"`) {
		t.Fatalf("another Spine: %v", err)
	}
	ff = newFleet("commit", "commit")
	ff.machines["m1"].trial = true
	if _, err := Run(context.Background(), ff.inv, ff.options("")); !errors.Is(err, ErrHalted) || !strings.Contains(err.Error(), "on trial") {
		t.Fatalf("a machine on trial: %v", err)
	}
	ff = newFleet("commit")
	ff.inv.Machines[0].Name = "gone"
	if _, err := Run(context.Background(), ff.inv, ff.options("")); !errors.Is(err, ErrHalted) || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("an unreachable machine: %v", err)
	}
}

func TestStateOfAnotherRolloutRefused(t *testing.T) {
	ff := newFleet("commit")
	state := filepath.Join(t.TempDir(), "state.json")
	if _, err := Run(context.Background(), ff.inv, ff.options(state)); err != nil {
		t.Fatal(err)
	}
	opts := ff.options(state)
	opts.Target.Version = 3
	if _, err := Run(context.Background(), ff.inv, opts); err == nil || !strings.Contains(err.Error(), "is for demo v2") {
		t.Fatalf("Run with another rollout's state = %v", err)
	}
	if err := os.WriteFile(state, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), ff.inv, ff.options(state)); err == nil || !strings.Contains(err.Error(), "rollout state") {
		t.Fatalf("Run with a damaged state file = %v", err)
	}
}
