package vm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"alpinespine.org/spine/internal/format/event"
)

// banner is what a fake QEMU prints to pose as a booting kernel.
const banner = "[    0.000000] Linux version 6.1.0-fake (fake@example) #1 SMP"

// fakeDir holds the fake QEMU scripts. TestMain writes them before any test starts a
// process: writing an executable while another goroutine forks can leave the new file open
// for writing in the child, and exec then fails with ETXTBSY (Go issue 22315).
var fakeDir string

// fakeScripts are the fake QEMUs. "fake-qemu" sources its -kernel file, so each test puts
// the fake guest's behaviour (a shell script body seeing QEMU's "$@") in the kernel file.
var fakeScripts = map[string]string{
	"fake-qemu":  "kernel=; prev=\nfor a in \"$@\"; do [ \"$prev\" = -kernel ] && kernel=$a; prev=$a; done\n. \"$kernel\"",
	"probe-pass": "exit 85",
	"probe-fail": "exit 1",
	"probe-hang": "exec sleep 30",
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vm-test-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	for name, body := range fakeScripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			panic(err)
		}
	}
	fakeDir = dir
	m.Run()
}

// fakeQEMU returns the path of one of fakeScripts.
func fakeQEMU(t *testing.T, name string) string {
	t.Helper()
	if _, ok := fakeScripts[name]; !ok {
		t.Fatalf("no fake QEMU %q", name)
	}
	return filepath.Join(fakeDir, name)
}

// fakeConfig returns a Config whose QEMU runs body as the guest.
func fakeConfig(t *testing.T, body string) Config {
	t.Helper()
	k := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(k, []byte(body+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return Config{QEMU: fakeQEMU(t, "fake-qemu"), Kernel: k, Accel: AccelTCG, Timeout: 20 * time.Second}
}

func start(t *testing.T, cfg Config) *Machine {
	t.Helper()
	m, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		m.Kill()
		m.Wait()
	})
	return m
}

func TestOutcomes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		body     string
		maxBoots int
		timeout  time.Duration
		want     Outcome
		boots    int
		code     int
		wantErr  bool
	}{
		{name: "poweroff", body: "echo '" + banner + "'\necho 'reboot: Power down'\nexit 0",
			want: PoweredOff, boots: 1},
		{name: "panic", body: "echo '" + banner + "'\necho 'Kernel panic - not syncing'\nexit 1",
			want: Panicked, boots: 1, code: 1},
		{name: "bad-args", body: "echo 'qemu-system-x86_64: -device nope: not found' >&2\nexit 1",
			want: Failed, code: 1, wantErr: true},
		{name: "other-status", body: "echo '" + banner + "'\nexit 3",
			want: Failed, boots: 1, code: 3, wantErr: true},
		{name: "foreign-signal", body: "echo '" + banner + "'\nkill -SEGV $$",
			want: Failed, boots: 1, code: -1, wantErr: true},
		{name: "reboots-allowed", maxBoots: 3,
			body: "for i in 1 2 3; do echo '" + banner + "'; echo panic; done\nexit 0",
			want: PoweredOff, boots: 3},
		{name: "too-many-boots", maxBoots: 2,
			body: "for i in 1 2 3 4; do echo '" + banner + "'; echo panic; done\nexec sleep 30",
			want: TooManyBoots, boots: 3, code: -1},
		{name: "default-one-boot",
			body: "for i in 1 2; do echo '" + banner + "'; done\nexec sleep 30",
			want: TooManyBoots, boots: 2, code: -1},
		{name: "timeout", timeout: 300 * time.Millisecond, body: "echo '" + banner + "'\nexec sleep 30",
			want: TimedOut, boots: 1, code: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := fakeConfig(t, tt.body)
			cfg.MaxBoots = tt.maxBoots
			if tt.timeout != 0 {
				cfg.Timeout = tt.timeout
			}
			m := start(t, cfg)
			res, err := m.Wait()
			if res.Outcome != tt.want || res.Boots != tt.boots || res.ExitCode != tt.code {
				t.Errorf("Result = %+v (%v), want outcome %v, %d boots, exit %d", res, res.Outcome, tt.want, tt.boots, tt.code)
			}
			if (err != nil) != tt.wantErr {
				t.Errorf("Wait error = %v, want error: %v", err, tt.wantErr)
			}
			if res.Duration <= 0 || res.Duration > 10*time.Second {
				t.Errorf("Duration = %v", res.Duration)
			}
		})
	}
}

func TestFailedCarriesStderr(t *testing.T) {
	t.Parallel()
	m := start(t, fakeConfig(t, "echo 'qemu-system-x86_64: -device nope: not found' >&2\nexit 1"))
	_, err := m.Wait()
	var ee *ExitError
	if !errors.As(err, &ee) || !strings.Contains(err.Error(), "-device nope: not found") {
		t.Fatalf("Wait error = %v, want an *ExitError quoting stderr", err)
	}
}

func TestTimeoutOutcome(t *testing.T) {
	t.Parallel()
	cfg := fakeConfig(t, "exec sleep 30")
	cfg.Timeout = 200 * time.Millisecond
	m := start(t, cfg)
	res, err := m.Wait()
	if res.Outcome != TimedOut || err != nil {
		t.Fatalf("Wait = %+v, %v; want TimedOut", res, err)
	}
	if res.Duration < 200*time.Millisecond || res.Duration > 5*time.Second {
		t.Errorf("Duration = %v, want about 200ms", res.Duration)
	}
}

func TestKillIdempotent(t *testing.T) {
	t.Parallel()
	m := start(t, fakeConfig(t, "echo '"+banner+"'\nexec sleep 30"))
	if _, err := m.WaitFor("Linux version", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := m.Kill(); err != nil {
			t.Fatalf("Kill #%d: %v", i+1, err)
		}
	}
	r1, err1 := m.Wait()
	r2, err2 := m.Wait()
	if r1.Outcome != Killed || err1 != nil || r1 != r2 || err2 != nil {
		t.Fatalf("Wait = %+v, %v then %+v, %v; want Killed twice", r1, err1, r2, err2)
	}
	if err := m.Kill(); err != nil {
		t.Fatalf("Kill after exit: %v", err)
	}
	if r3, _ := m.Wait(); r3 != r1 {
		t.Fatalf("a Kill after exit changed the result to %+v", r3)
	}
}

func TestContextCancelKills(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	m, err := Start(ctx, fakeConfig(t, "exec sleep 30"))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	res, err := m.Wait()
	if res.Outcome != Killed || err != nil {
		t.Fatalf("Wait = %+v, %v; want Killed", res, err)
	}
}

func TestCancelledContextRefusesStart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if m, err := Start(ctx, fakeConfig(t, "exit 0")); err == nil {
		m.Kill()
		t.Fatal("Start with a cancelled context succeeded")
	}
}

// TestNoStragglers checks that whatever QEMU leaves in its process group dies with it.
func TestNoStragglers(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "pid")
	m := start(t, fakeConfig(t, "sleep 30 &\necho $! > "+pidFile+"\nexit 0"))
	if res, err := m.Wait(); res.Outcome != PoweredOff || err != nil {
		t.Fatalf("Wait = %+v, %v", res, err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	// The killed child may linger as a zombie until its new parent reaps it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("child %d of the fake QEMU survived: %s", pid, stat)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWaitForCursor(t *testing.T) {
	t.Parallel()
	m := start(t, fakeConfig(t, "printf 'x one\\r\\ny\\nx two\\n'\nsleep 0.3\necho 'x three'\nexit 0"))
	steps := []struct {
		want string
		line string // "" means the wait must fail
	}{
		{"x", "x one"}, // trailing \r stripped
		{"x", "x two"},
		{"y", ""}, // already passed by the cursor
		{"x", "x three"},
		{"x", ""},
	}
	for i, s := range steps {
		line, err := m.WaitFor(s.want, 5*time.Second)
		if s.line == "" {
			if !errors.Is(err, ErrExited) {
				t.Fatalf("step %d: WaitFor(%q) = %q, %v; want ErrExited", i, s.want, line, err)
			}
			continue
		}
		if err != nil || line != s.line {
			t.Fatalf("step %d: WaitFor(%q) = %q, %v; want %q", i, s.want, line, err, s.line)
		}
	}
	if got, want := m.Lines(), []string{"x one", "y", "x two", "x three"}; !slices.Equal(got, want) {
		t.Errorf("Lines = %q, want %q", got, want)
	}
}

// TestWaitForMissingLineFails is the harness self-test: a line that never comes fails.
func TestWaitForMissingLineFails(t *testing.T) {
	t.Parallel()
	m := start(t, fakeConfig(t, "echo '"+banner+"'\nexec sleep 30"))
	begin := time.Now()
	_, err := m.WaitFor("bay0: event=never", 300*time.Millisecond)
	var we *WaitError
	if !errors.As(err, &we) || !errors.Is(err, ErrWaitTimeout) {
		t.Fatalf("WaitFor = %v, want a *WaitError wrapping ErrWaitTimeout", err)
	}
	if d := time.Since(begin); d < 300*time.Millisecond || d > 5*time.Second {
		t.Errorf("WaitFor gave up after %v, want about 300ms", d)
	}
	if !strings.Contains(err.Error(), "Linux version 6.1.0-fake") || !slices.Equal(we.Tail, []string{banner}) {
		t.Errorf("error lacks the console tail: %v", err)
	}
	// The failed wait did not move the cursor.
	if line, err := m.WaitFor("Linux version", 0); err != nil || line != banner {
		t.Errorf("WaitFor after a failed wait = %q, %v", line, err)
	}
}

func TestWaitForExitedTail(t *testing.T) {
	t.Parallel()
	m := start(t, fakeConfig(t, "i=0; while [ $i -lt 30 ]; do echo line $i; i=$((i+1)); done\nexit 0"))
	_, err := m.WaitFor("never", 10*time.Second)
	var we *WaitError
	if !errors.As(err, &we) || !errors.Is(err, ErrExited) {
		t.Fatalf("WaitFor = %v, want ErrExited", err)
	}
	if len(we.Tail) != tailLines || we.Tail[0] != "line 10" || we.Tail[tailLines-1] != "line 29" {
		t.Errorf("Tail = %q, want line 10 .. line 29", we.Tail)
	}
}

func TestWaitForAny(t *testing.T) {
	t.Parallel()
	m := start(t, fakeConfig(t, "echo 'bay0: event=slot-bad slot=A'\necho 'bay0: event=ready'\nexit 0"))
	want := []string{"event=ready", "event=slot-bad", "event=poweroff"}
	i, line, err := m.WaitForAny(want, 5*time.Second)
	if err != nil || i != 1 || line != "bay0: event=slot-bad slot=A" {
		t.Fatalf("WaitForAny = %d, %q, %v", i, line, err)
	}
	i, line, err = m.WaitForAny(want, 5*time.Second)
	if err != nil || i != 0 || line != "bay0: event=ready" {
		t.Fatalf("second WaitForAny = %d, %q, %v", i, line, err)
	}
}

// TestWaitForEvent: only whole lines that start with the event prefix and match count; a
// persona's line quoting an event, a line with other attributes and an unterminated event
// line do not.
func TestWaitForEvent(t *testing.T) {
	t.Parallel()
	m := start(t, fakeConfig(t, strings.Join([]string{
		"echo 'persona web: bay0: event=slot-up slot=a version=1 name=demo'",
		"echo ' bay0: event=slot-up slot=a version=1 name=demo'",
		"echo 'bay0: event=slot-up slot=b version=1 name=demo'",
		"echo 'bay0: event=slot-up slot=a version=2 name=demo'",
		"printf 'bay0: event=halt action=reboot'",
		"sleep 5", "exit 0"}, "\n")))
	e, err := m.WaitForEvent(event.SlotUp, []event.Attr{event.KV("slot", "a")}, 5*time.Second)
	if err != nil || e.Value("version") != "2" {
		t.Fatalf("WaitForEvent = %+v, %v; want the slot a, version 2 line", e, err)
	}
	_, err = m.WaitForEvent(event.Halt, nil, time.Second)
	var we *WaitError
	if !errors.As(err, &we) || !errors.Is(err, ErrWaitTimeout) || !strings.Contains(err.Error(), "bay0: event=halt") {
		t.Errorf("WaitForEvent on an unterminated line = %v, want a timeout naming the event", err)
	}
	m.Kill()
}

// TestPromptAndSend covers a prompt without a newline (the LUKS passphrase prompt) and
// console input through Send.
func TestPromptAndSend(t *testing.T) {
	t.Parallel()
	var console bytes.Buffer
	cfg := fakeConfig(t, "printf 'Enter passphrase for persist: '\nread pw\necho\necho \"got $pw\"\necho 'Enter again'\nexit 0")
	cfg.Console = &console
	m := start(t, cfg)
	line, err := m.WaitFor("passphrase", 5*time.Second)
	if err != nil || line != "Enter passphrase for persist: " {
		t.Fatalf("WaitFor prompt = %q, %v", line, err)
	}
	if err := m.Send("hunter2\n"); err != nil {
		t.Fatal(err)
	}
	// The prompt line, now completed by the echoed newline, is not matched again.
	if line, err := m.WaitFor("Enter", 5*time.Second); err != nil || line != "Enter again" {
		t.Fatalf("WaitFor after prompt = %q, %v", line, err)
	}
	if _, err := m.Wait(); err != nil {
		t.Fatal(err)
	}
	if got, want := console.String(), "Enter passphrase for persist: \ngot hunter2\nEnter again\n"; got != want {
		t.Errorf("console = %q, want %q", got, want)
	}
}

func TestPartialLineReturnedWhole(t *testing.T) {
	t.Parallel()
	// The line arrives in two pieces 100ms apart; WaitFor must not return the first piece.
	m := start(t, fakeConfig(t, "printf 'bay0: event=ready '\nsleep 0.1\necho 'slot=A'\nexec sleep 30"))
	line, err := m.WaitFor("event=ready", 5*time.Second)
	if err != nil || line != "bay0: event=ready slot=A" {
		t.Fatalf("WaitFor = %q, %v", line, err)
	}
}

func TestStdin(t *testing.T) {
	t.Parallel()
	cfg := fakeConfig(t, "read pw\necho \"got $pw\"\nexit 0")
	cfg.Stdin = strings.NewReader("from-stdin\n")
	m := start(t, cfg)
	if err := m.Send("x\n"); !errors.Is(err, ErrStdinConfigured) {
		t.Errorf("Send with Config.Stdin = %v, want ErrStdinConfigured", err)
	}
	if line, err := m.WaitFor("got", 5*time.Second); err != nil || line != "got from-stdin" {
		t.Fatalf("WaitFor = %q, %v", line, err)
	}
}

func TestNoStdinMeansNoInput(t *testing.T) {
	t.Parallel()
	// With neither Stdin nor Send, a read from the console blocks until the machine dies.
	cfg := fakeConfig(t, "read x\necho \"read returned\"\nexit 0")
	cfg.Timeout = 300 * time.Millisecond
	m := start(t, cfg)
	if res, _ := m.Wait(); res.Outcome != TimedOut {
		t.Fatalf("Outcome = %v, want TimedOut", res.Outcome)
	}
	if slices.Contains(m.Lines(), "read returned") {
		t.Fatal("the guest console received input nobody sent")
	}
}

func TestIsBanner(t *testing.T) {
	t.Parallel()
	tests := map[string]bool{
		banner:                           true,
		"Linux version 6.1.0 (x) #1":     true, // printk.time=0
		"[    1.234567] Linux version 6": true,
		"echo Linux version 6":           false,
		"[    0.000000] Command line: x": false,
		"[ unterminated Linux version ":  false,
		"":                               false,
	}
	for line, want := range tests {
		if got := isBanner(line); got != want {
			t.Errorf("isBanner(%q) = %v, want %v", line, got, want)
		}
	}
}

func TestOutcomeString(t *testing.T) {
	t.Parallel()
	want := map[Outcome]string{
		PoweredOff: "powered-off", Panicked: "panicked", TooManyBoots: "too-many-boots",
		TimedOut: "timed-out", Killed: "killed", Failed: "failed", 0: "Outcome(0)", 99: "Outcome(99)",
	}
	for o, s := range want {
		if o.String() != s {
			t.Errorf("Outcome(%d).String() = %q, want %q", int(o), o.String(), s)
		}
	}
}
