package supervise

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/persona"
	"alpinespine.org/spine/internal/bay0/probe"
	"alpinespine.org/spine/internal/format/policy"
)

// fakeInstance is a launched persona that ends when told to (exit) or when destroyed.
type fakeInstance struct {
	pid       int
	exited    chan unix.WaitStatus
	oom       int64
	once      sync.Once
	destroyed chan struct{}
	// slow and fail shape Destroy: it takes slow, and then fails with fail.
	slow time.Duration
	fail error
	// thrash makes the instance report a full memory stall all the time, at memory.max.
	thrash  bool
	created time.Time
	mu      sync.Mutex
	events  int64
	// signals are the signals sent to the workload; it ends on one unless ignore is set.
	signals []unix.Signal
	ignore  bool
}

func (f *fakeInstance) Signal(sig unix.Signal) error {
	f.mu.Lock()
	f.signals = append(f.signals, sig)
	ignore := f.ignore
	f.mu.Unlock()
	if !ignore {
		f.exit(unix.WaitStatus(sig))
	}
	return nil
}

func (f *fakeInstance) signalled() []unix.Signal {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]unix.Signal(nil), f.signals...)
}

func (f *fakeInstance) Memory() (persona.MemoryStat, error) {
	if !f.thrash {
		return persona.MemoryStat{}, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events++
	return persona.MemoryStat{FullStallUS: uint64(time.Since(f.created).Microseconds()), MaxEvents: f.events}, nil
}

func (f *fakeInstance) PID() int                       { return f.pid }
func (f *fakeInstance) Startup() time.Duration         { return time.Millisecond }
func (f *fakeInstance) Exited() <-chan unix.WaitStatus { return f.exited }
func (f *fakeInstance) OOMKills() int64                { return f.oom }
func (f *fakeInstance) exit(ws unix.WaitStatus)        { f.once.Do(func() { f.exited <- ws }) }
func (f *fakeInstance) Destroy() error {
	time.Sleep(f.slow)
	if f.fail != nil {
		return f.fail
	}
	f.exit(unix.WaitStatus(unix.SIGKILL))
	select {
	case <-f.destroyed:
	default:
		close(f.destroyed)
	}
	return nil
}

// fakeLauncher records launches and hands out fake instances.
type fakeLauncher struct {
	mu        sync.Mutex
	launched  []string
	instances map[string][]*fakeInstance
	fail      map[string]error
	thrash    map[string]bool
	next      int
}

func newFakeLauncher() *fakeLauncher {
	return &fakeLauncher{instances: map[string][]*fakeInstance{}, fail: map[string]error{}, thrash: map[string]bool{}, next: 100}
}

func (l *fakeLauncher) Launch(s persona.Spec, _ io.Writer) (Instance, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.launched = append(l.launched, s.Name)
	if err := l.fail[s.Name]; err != nil {
		return nil, err
	}
	l.next++
	in := &fakeInstance{pid: l.next, exited: make(chan unix.WaitStatus, 1), destroyed: make(chan struct{}),
		thrash: l.thrash[s.Name], created: time.Now()}
	l.instances[s.Name] = append(l.instances[s.Name], in)
	return in, nil
}

func (l *fakeLauncher) latest(name string) *fakeInstance {
	l.mu.Lock()
	defer l.mu.Unlock()
	is := l.instances[name]
	return is[len(is)-1]
}

// waitLaunches waits until name has been launched n times.
func (l *fakeLauncher) waitLaunches(t *testing.T, name string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		got := 0
		for _, x := range l.launched {
			if x == name {
				got++
			}
		}
		l.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s launched %d times, want %d", name, got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testPolicy(t *testing.T, ps ...policy.Persona) policy.Policy {
	t.Helper()
	pol := policy.Policy{Personas: ps}
	if err := pol.Validate(); err != nil {
		t.Fatal(err)
	}
	return pol
}

func pentry(name string, order int) policy.Persona {
	return policy.Persona{Name: name, Exec: []string{"/bin/" + name}, CPUs: 0.1, Memory: 16 << 20, Pids: 8, Order: order}
}

func start(t *testing.T, l *fakeLauncher, pol policy.Policy) (*Supervisor, *syncBuffer) {
	t.Helper()
	return startChecked(t, l, pol, nil)
}

// startChecked starts a supervisor whose health checks are made by check.
func startChecked(t *testing.T, l *fakeLauncher, pol policy.Policy, check func(context.Context, probe.Target) error) (*Supervisor, *syncBuffer) {
	t.Helper()
	return startConfig(t, l, pol, Config{Check: check})
}

// startConfig starts a supervisor of l's instances with the test's timing and c's checks.
func startConfig(t *testing.T, l *fakeLauncher, pol policy.Policy, c Config) (*Supervisor, *syncBuffer) {
	t.Helper()
	var console syncBuffer
	s, err := New(Config{Console: &console, Launcher: l, PersistRoot: "/persist", Tick: 5 * time.Millisecond,
		PressureEvery: 50 * time.Millisecond, Backoff: Backoff{Min: 10 * time.Millisecond, Max: 40 * time.Millisecond, Reset: time.Hour},
		Check: c.Check, Exec: c.Exec}, pol)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		s.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return s, &console
}

func waitState(t *testing.T, s *Supervisor, name string, want State) Status {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, st := range s.Status() {
			if st.Name == name && st.State == want {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never reached %s: %+v", name, want, s.Status())
		}
		time.Sleep(time.Millisecond)
	}
}

func TestStartsInPolicyOrder(t *testing.T) {
	l := newFakeLauncher()
	s, console := start(t, l, testPolicy(t, pentry("zeta", 1), pentry("alpha", 2), pentry("mid", 1)))
	for _, n := range []string{"mid", "zeta", "alpha"} {
		waitState(t, s, n, Running)
	}
	l.mu.Lock()
	got := strings.Join(l.launched, ",")
	l.mu.Unlock()
	if got != "mid,zeta,alpha" {
		t.Errorf("launch order %s, want mid,zeta,alpha (order, then name)", got)
	}
	if !strings.Contains(console.String(), "bay0: persona mid started pid 101") {
		t.Errorf("console:\n%s", console)
	}
	if !s.AllUp() {
		t.Error("AllUp is false with every persona running")
	}
}

func TestEndedPersonaIsReplacedWithReason(t *testing.T) {
	l := newFakeLauncher()
	s, console := start(t, l, testPolicy(t, pentry("web", 0)))
	waitState(t, s, "web", Running)
	first := l.latest("web")
	first.oom = 1
	first.exit(unix.WaitStatus(unix.SIGKILL))
	l.waitLaunches(t, "web", 2)
	st := waitState(t, s, "web", Running)
	if st.Restarts != 1 || !strings.Contains(st.LastExit, "OOM killer") || st.Pid == first.pid {
		t.Errorf("after an OOM kill: %+v", st)
	}
	select {
	case <-first.destroyed:
	default:
		t.Error("the ended instance's cgroup was not destroyed")
	}
	if !strings.Contains(console.String(), "bay0: persona web exited: killed by the OOM killer") {
		t.Errorf("console:\n%s", console)
	}
	l.latest("web").exit(unix.WaitStatus(unix.SIGSYS))
	l.waitLaunches(t, "web", 3)
	if st := waitState(t, s, "web", Running); st.LastExit != "killed by seccomp (SIGSYS)" || st.Restarts != 2 {
		t.Errorf("after SIGSYS: %+v", st)
	}
}

func TestRestartNever(t *testing.T) {
	l := newFakeLauncher()
	p := pentry("job", 0)
	p.Restart = "never"
	s, _ := start(t, l, testPolicy(t, p))
	waitState(t, s, "job", Running)
	l.latest("job").exit(0)
	waitState(t, s, "job", Exited)
	time.Sleep(50 * time.Millisecond)
	if len(l.instances["job"]) != 1 {
		t.Errorf("a restart = never persona was started %d times", len(l.instances["job"]))
	}
	if !s.AllUp() {
		t.Error("a one-shot persona that ended counts as down")
	}
}

func TestStopStartReplace(t *testing.T) {
	l := newFakeLauncher()
	s, console := start(t, l, testPolicy(t, pentry("web", 0)))
	ctx := context.Background()
	waitState(t, s, "web", Running)
	first := l.latest("web")
	if err := s.Stop(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if st := waitState(t, s, "web", Stopped); st.Pid != 0 {
		t.Errorf("stopped: %+v", st)
	}
	<-first.destroyed
	time.Sleep(50 * time.Millisecond)
	if n := len(l.instances["web"]); n != 1 {
		t.Fatalf("a stopped persona was restarted (%d launches)", n)
	}
	if s.AllUp() {
		t.Error("AllUp with a stopped persona")
	}
	if err := s.Start(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	second := waitState(t, s, "web", Running)
	if err := s.Replace(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	l.waitLaunches(t, "web", 3)
	third := waitState(t, s, "web", Running)
	if third.Pid == second.Pid || third.Restarts != 0 {
		t.Errorf("replace: before %+v, after %+v", second, third)
	}
	if !strings.Contains(console.String(), "bay0: persona web replaced") {
		t.Errorf("console:\n%s", console)
	}
	if err := s.Stop(ctx, "nope"); !errors.Is(err, ErrUnknown) {
		t.Errorf("stop of an unknown persona: %v", err)
	}
}

func TestRefusedPersonaDoesNotStopOthers(t *testing.T) {
	l := newFakeLauncher()
	p := pentry("web", 0)
	p.Data = true
	var console syncBuffer
	s, err := New(Config{Console: &console, Launcher: l, Tick: 5 * time.Millisecond}, testPolicy(t, p, pentry("beat", 1)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	waitState(t, s, "beat", Running)
	if st := waitState(t, s, "web", Refused); st.Limits.PidsMax != 8 {
		t.Errorf("refused: %+v", st)
	}
	if !strings.Contains(console.String(), "bay0: persona web refused: persona \"web\": data = true but /persist is not mounted") {
		t.Errorf("console:\n%s", console.String())
	}
	if err := s.Start(ctx, "web"); !errors.Is(err, ErrRefused) {
		t.Errorf("start of a refused persona: %v", err)
	}
	if s.AllUp() {
		t.Error("AllUp with a refused persona")
	}
}

func TestLaunchFailureIsRetried(t *testing.T) {
	l := newFakeLauncher()
	l.fail["web"] = errors.New("mounts: boom")
	s, console := start(t, l, testPolicy(t, pentry("web", 0)))
	l.waitLaunches(t, "web", 2)
	l.mu.Lock()
	delete(l.fail, "web")
	l.mu.Unlock()
	waitState(t, s, "web", Running)
	if !strings.Contains(console.String(), "bay0: persona web could not start: mounts: boom") {
		t.Errorf("console:\n%s", console)
	}
}

func TestProgressAdvances(t *testing.T) {
	l := newFakeLauncher()
	s, _ := start(t, l, testPolicy(t, pentry("web", 0)))
	a := s.Progress()
	time.Sleep(30 * time.Millisecond)
	if b := s.Progress(); !b.After(a) {
		t.Errorf("Progress did not advance: %v then %v", a, b)
	}
}

func TestBackoff(t *testing.T) {
	b := DefaultBackoff()
	var d time.Duration
	var got []time.Duration
	for range 9 {
		d = b.next(d, time.Second)
		got = append(got, d)
	}
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("delays %v", got)
		}
	}
	if d := b.next(10*time.Second, 31*time.Second); d != b.Min {
		t.Errorf("after 31 s up the delay is %v, want %v", d, b.Min)
	}
}

// TestThrashingPersonaIsReplaced: a persona stalled on memory at its limit for its whole
// memory_stall window is replaced and the reason logged; its neighbour is left alone.
func TestThrashingPersonaIsReplaced(t *testing.T) {
	l := newFakeLauncher()
	l.thrash["thrash"] = true
	p := pentry("thrash", 1)
	p.MemoryStall = policy.Duration(time.Second)
	s, console := start(t, l, testPolicy(t, p, pentry("calm", 2)))
	first := time.Now()
	l.waitLaunches(t, "thrash", 2)
	if took := time.Since(first); took < time.Second {
		t.Errorf("replaced after %s, before its 1s window", took)
	}
	if !strings.Contains(console.String(), "bay0: persona thrash stuck at memory.max for 1s: refaulted 0 MiB (0.0x memory.max), fully stalled 100% of the time") {
		t.Errorf("console:\n%s", console)
	}
	st := s.Status()
	if st[0].Restarts < 1 || !strings.HasPrefix(st[0].LastExit, "replaced: stuck at memory.max") {
		t.Errorf("status %+v", st[0])
	}
	l.mu.Lock()
	calm := len(l.instances["calm"])
	l.mu.Unlock()
	if calm != 1 {
		t.Errorf("the calm neighbour was launched %d times", calm)
	}
	if sig := l.instances["thrash"][0].signalled(); len(sig) != 0 {
		t.Errorf("a persona stuck at memory.max was sent %v before its kill", sig)
	}
}

func TestStallWatch(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	stat := func(stallS float64, events int64) persona.MemoryStat {
		return persona.MemoryStat{FullStallUS: uint64(stallS * 1e6), MaxEvents: events}
	}
	refaults := func(pages, events int64) persona.MemoryStat {
		return persona.MemoryStat{Refaults: pages, MaxEvents: events}
	}
	for _, c := range []struct {
		name    string
		samples []persona.MemoryStat
		stuck   bool
	}{
		{"stalled all along", []persona.MemoryStat{stat(0, 0), stat(5, 10), stat(10, 20)}, true},
		{"half stalled", []persona.MemoryStat{stat(0, 0), stat(2.5, 10), stat(5, 20)}, true},
		{"short of the window", []persona.MemoryStat{stat(0, 0), stat(5, 10)}, false},
		{"stalled but below the limit", []persona.MemoryStat{stat(0, 5), stat(5, 5), stat(10, 5)}, false},
		{"a little stall", []persona.MemoryStat{stat(0, 0), stat(1, 10), stat(2, 20)}, false},
		{"counter went back (new cgroup)", []persona.MemoryStat{stat(100, 0), stat(5, 10), stat(10, 20)}, false},
		{"refaulted its memory.max twice", []persona.MemoryStat{refaults(0, 0), refaults(4096, 10), refaults(8192, 20)}, true},
		{"refaulted a little", []persona.MemoryStat{refaults(0, 0), refaults(100, 10), refaults(200, 20)}, false},
		{"refaulted, never at the limit", []persona.MemoryStat{refaults(0, 5), refaults(8192, 5), refaults(9000, 5)}, false},
	} {
		w := &stallWatch{window: 10 * time.Second, memoryMax: 16 << 20}
		var stuck bool
		for i, st := range c.samples {
			_, stuck = w.add(at(5*i), st)
		}
		if stuck != c.stuck {
			t.Errorf("%s: stuck %v, want %v", c.name, stuck, c.stuck)
		}
	}
	// The window slides: an old stall does not count against a recovered persona.
	w := &stallWatch{window: 10 * time.Second}
	for i, st := range []persona.MemoryStat{stat(0, 0), stat(10, 10), stat(10, 10), stat(10, 10), stat(10.5, 11)} {
		if _, stuck := w.add(at(5*i), st); stuck && i > 2 {
			t.Errorf("sample %d: stuck after recovering", i)
		}
	}
}

// recordReader hands out one kernel log record per Read, as /dev/kmsg does.
type recordReader chan string

func (r recordReader) Read(p []byte) (int, error) {
	s, ok := <-r
	if !ok {
		return 0, io.EOF
	}
	return copy(p, s), nil
}

// TestDeniedSyscallsAreAttributed: a refusal in the kernel log is logged against the persona
// whose uid range holds it, shows in Status, and a loop of refusals is not logged line by line.
func TestDeniedSyscallsAreAttributed(t *testing.T) {
	l := newFakeLauncher()
	kmsg := make(recordReader)
	var console syncBuffer
	s, err := New(Config{Console: &console, Launcher: l, Tick: 5 * time.Millisecond, KernelLog: kmsg},
		testPolicy(t, pentry("web", 1), pentry("db", 2)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	l.waitLaunches(t, "db", 1)
	uid := persona.IDRange(1) + 1000 // db is second in policy order: a user inside its range
	rec := func(nr int) string {
		return fmt.Sprintf("5,1,2,-;audit: type=1326 audit(1.2:3): auid=4294967295 uid=%d gid=%d ses=1 pid=77 comm=\"db\" exe=\"/bin/db\" sig=0 arch=c000003e syscall=%d compat=0 ip=0x1 code=0x50000", uid, uid, nr)
	}
	for range 50 {
		kmsg <- rec(288)
	}
	kmsg <- "6,2,3,-;something else"
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(fmt.Sprint(s.Status()), "accept4 (288), 50 times") {
		if time.Now().After(deadline) {
			t.Fatalf("status %+v", s.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := strings.Count(console.String(), "denied syscall"); n != 1 {
		t.Errorf("%d lines about denials for a loop of one call:\n%s", n, console.String())
	}
	if !strings.Contains(console.String(), "bay0: persona db: denied syscall accept4 (288), once") {
		t.Errorf("console:\n%s", console.String())
	}
	if st := s.Status(); len(st[0].Denied) != 0 {
		t.Errorf("web was blamed: %+v", st[0])
	}
}

// TestFilterItCannotBuildRefusesOnePersona: a policy whose syscalls bay0 cannot compile (spine
// build refuses it, but bay0 does not rely on that) refuses that persona with the reason; the
// others, and bay0, run.
func TestFilterItCannotBuildRefusesOnePersona(t *testing.T) {
	l := newFakeLauncher()
	bad := pentry("web", 0)
	bad.Syscalls = []string{"epoll_create2"}
	floor := pentry("api", 2)
	floor.Syscalls = []string{"unshare"}
	var console syncBuffer
	s, err := New(Config{Console: &console, Launcher: l, Tick: 5 * time.Millisecond}, testPolicy(t, bad, pentry("beat", 1), floor))
	if err != nil {
		t.Fatalf("New failed for the whole policy: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	waitState(t, s, "beat", Running)
	waitState(t, s, "web", Refused)
	waitState(t, s, "api", Refused)
	for _, want := range []string{`bay0: persona web refused: seccomp filter: allow "epoll_create2": unknown system call (did you mean epoll_create`,
		`bay0: persona api refused: seccomp filter: allow "unshare" enters or makes namespaces`} {
		if !strings.Contains(console.String(), want) {
			t.Errorf("console lacks %q:\n%s", want, console.String())
		}
	}
}

// TestStopIsOffTheLoop: a destroy that takes seconds leaves the loop progressing, and the next
// instance starts only once the old one is confirmed gone.
func TestStopIsOffTheLoop(t *testing.T) {
	l := newFakeLauncher()
	s, _ := start(t, l, testPolicy(t, pentry("web", 0)))
	waitState(t, s, "web", Running)
	first := l.latest("web")
	first.slow = 500 * time.Millisecond
	ctx := context.Background()
	asked := time.Now()
	if err := s.Replace(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(asked); d > 200*time.Millisecond {
		t.Errorf("replace blocked the loop for %s while the old instance was destroyed", d)
	}
	for time.Since(asked) < 300*time.Millisecond {
		if p := time.Since(s.Progress()); p > 100*time.Millisecond {
			t.Fatalf("the loop went %s without progress during a destroy", p)
		}
		time.Sleep(10 * time.Millisecond)
	}
	l.mu.Lock()
	n := len(l.instances["web"])
	l.mu.Unlock()
	if n != 1 {
		t.Fatalf("the new instance started before the old one was gone (%d launches)", n)
	}
	l.waitLaunches(t, "web", 2)
	waitState(t, s, "web", Running)
}

// TestContainmentFailureIsReported: an instance whose cgroup cannot be confirmed empty is
// reported to the governor, which resets the machine.
func TestContainmentFailureIsReported(t *testing.T) {
	l := newFakeLauncher()
	var console syncBuffer
	failed := make(chan string, 1)
	s, err := New(Config{Console: &console, Launcher: l, Tick: 5 * time.Millisecond,
		Containment: func(name string, err error) { failed <- name + ": " + err.Error() }}, testPolicy(t, pentry("web", 0)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	waitState(t, s, "web", Running)
	in := l.latest("web")
	in.fail = errors.New("cgroup still has processes after cgroup.kill")
	in.exit(0)
	select {
	case got := <-failed:
		if !strings.Contains(got, "web: cgroup still has processes") {
			t.Errorf("containment report %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a failed destroy was not reported")
	}
}

// TestStopAsksFirst: a stop sends the workload its stop signal first; one that ends within its
// grace period is not killed, and its cgroup is still removed.
func TestStopAsksFirst(t *testing.T) {
	l := newFakeLauncher()
	p := pentry("db", 0)
	p.StopSignal = "INT"
	s, console := start(t, l, testPolicy(t, p))
	waitState(t, s, "db", Running)
	in := l.latest("db")
	if err := s.Stop(context.Background(), "db"); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, "db", Stopped)
	<-in.destroyed
	waitConsole(t, console, "event=persona-ended name=db signal=SIGINT")
	if got := in.signalled(); len(got) != 1 || got[0] != unix.SIGINT {
		t.Errorf("signals sent: %v, want [SIGINT]", got)
	}
	if c := console.String(); !strings.Contains(c, "killed=false") || !strings.Contains(c, "bay0: persona db ended") {
		t.Errorf("console:\n%s", c)
	}
}

// TestStopKillsAfterGrace: a workload that ignores its stop signal is killed when its
// stop_timeout ends, not before, and a replacement waits for that.
func TestStopKillsAfterGrace(t *testing.T) {
	l := newFakeLauncher()
	p := pentry("web", 0)
	p.StopTimeout = policy.Duration(300 * time.Millisecond)
	s, console := start(t, l, testPolicy(t, p))
	waitState(t, s, "web", Running)
	in := l.latest("web")
	in.ignore = true
	asked := time.Now()
	if err := s.Replace(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	<-in.destroyed
	if d := time.Since(asked); d < 300*time.Millisecond {
		t.Errorf("killed after %s, before its 300ms stop_timeout", d)
	}
	l.waitLaunches(t, "web", 2)
	waitState(t, s, "web", Running)
	waitConsole(t, console, "event=persona-ended name=web signal=SIGTERM")
	if c := console.String(); !strings.Contains(c, "killed=true") || !strings.Contains(c, "did not end within") {
		t.Errorf("console:\n%s", c)
	}
}

// TestShutdownStopsEveryone: Shutdown stops all personas at once, returns when they are gone,
// and nothing starts again; a persona stuck at its memory limit is never asked, only killed.
func TestShutdownStopsEveryone(t *testing.T) {
	l := newFakeLauncher()
	a, b := pentry("a", 0), pentry("b", 1)
	a.StopTimeout = policy.Duration(400 * time.Millisecond)
	b.StopTimeout = policy.Duration(400 * time.Millisecond)
	s, _ := start(t, l, testPolicy(t, a, b))
	waitState(t, s, "a", Running)
	waitState(t, s, "b", Running)
	ia, ib := l.latest("a"), l.latest("b")
	ia.ignore, ib.ignore = true, true
	asked := time.Now()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Both graces run side by side: well under the sum of the two.
	if d := time.Since(asked); d < 400*time.Millisecond || d > 780*time.Millisecond {
		t.Errorf("shutdown took %s, want one grace period of 400ms", d)
	}
	for _, in := range []*fakeInstance{ia, ib} {
		select {
		case <-in.destroyed:
		default:
			t.Errorf("instance %d not destroyed when Shutdown returned", in.pid)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(l.instances["a"]) + len(l.instances["b"]); n != 2 {
		t.Errorf("%d launches after shutdown, want none past the first two", n-2)
	}
	if err := s.Start(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if st := waitState(t, s, "a", Stopped); st.Pid != 0 {
		t.Errorf("a started after shutdown: %+v", st)
	}
}

func waitConsole(t *testing.T, c *syncBuffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(c.String(), want); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("console never said %q:\n%s", want, c)
		}
	}
}

// TestCourierChannelOnlyToCourier: bay0's channel for fetched updates reaches the courier
// persona's instances and no other persona's; without a channel the courier is refused alone.
func TestCourierChannelOnlyToCourier(t *testing.T) {
	courier := pentry("courier", 2)
	courier.Network, courier.Address, courier.Courier = "uplink", "10.0.2.15/24", true
	pol := testPolicy(t, pentry("web", 1), courier)
	ch, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	var console syncBuffer
	s, err := New(Config{Console: &console, Launcher: newFakeLauncher(), Courier: ch}, pol)
	if err != nil {
		t.Fatal(err)
	}
	if s.ps["courier"].spec.Courier != ch || s.ps["web"].spec.Courier != nil {
		t.Fatalf("channel given to courier %v, web %v", s.ps["courier"].spec.Courier, s.ps["web"].spec.Courier)
	}
	s, err = New(Config{Console: &console, Launcher: newFakeLauncher()}, pol)
	if err != nil {
		t.Fatal(err)
	}
	if s.ps["courier"].state != Refused || s.ps["web"].state == Refused {
		t.Fatalf("without a channel: courier %s, web %s", s.ps["courier"].state, s.ps["web"].state)
	}
}
