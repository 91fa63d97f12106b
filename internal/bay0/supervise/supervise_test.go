package supervise

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/persona"
	"alpinespine.org/spine/internal/format/policy"
)

// fakeInstance is a launched persona that ends when told to (exit) or when destroyed.
type fakeInstance struct {
	pid       int
	exited    chan unix.WaitStatus
	oom       int64
	once      sync.Once
	destroyed chan struct{}
}

func (f *fakeInstance) PID() int                       { return f.pid }
func (f *fakeInstance) Startup() time.Duration         { return time.Millisecond }
func (f *fakeInstance) Exited() <-chan unix.WaitStatus { return f.exited }
func (f *fakeInstance) OOMKills() int64                { return f.oom }
func (f *fakeInstance) exit(ws unix.WaitStatus)        { f.once.Do(func() { f.exited <- ws }) }
func (f *fakeInstance) Destroy() error {
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
	next      int
}

func newFakeLauncher() *fakeLauncher {
	return &fakeLauncher{instances: map[string][]*fakeInstance{}, fail: map[string]error{}, next: 100}
}

func (l *fakeLauncher) Launch(s persona.Spec, _ io.Writer) (Instance, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.launched = append(l.launched, s.Name)
	if err := l.fail[s.Name]; err != nil {
		return nil, err
	}
	l.next++
	in := &fakeInstance{pid: l.next, exited: make(chan unix.WaitStatus, 1), destroyed: make(chan struct{})}
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
	var console syncBuffer
	s, err := New(Config{Console: &console, Launcher: l, PersistRoot: "/persist", Tick: 5 * time.Millisecond,
		Backoff: Backoff{Min: 10 * time.Millisecond, Max: 40 * time.Millisecond, Reset: time.Hour}}, pol)
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
