package vmtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"alpinespine.org/spine/internal/host/vm"
)

// recorder is a testing.TB that records failures instead of failing the real test, so the
// harness's own failure paths can be tested. Methods it does not override panic (nil TB).
type recorder struct {
	testing.TB
	mu       sync.Mutex
	failed   bool
	logs     []string
	cleanups []func()
}

func (r *recorder) Helper()                  {}
func (r *recorder) Context() context.Context { return context.Background() }

func (r *recorder) Logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
}

func (r *recorder) Errorf(format string, args ...any) {
	r.Logf("ERROR: "+format, args...)
	r.mu.Lock()
	r.failed = true
	r.mu.Unlock()
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

func (r *recorder) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

func (r *recorder) log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.logs, "\n")
}

// run runs body as a test against a fresh recorder, then its cleanups, like tRunner.
func run(body func(r *recorder)) *recorder {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		body(r)
	}()
	<-done
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	return r
}

// fakeQEMU is a stand-in for QEMU that runs its -kernel file as a shell script. TestMain
// writes it before any test forks: writing an executable while another goroutine forks can
// make exec fail with ETXTBSY (Go issue 22315).
const fakeQEMU = `#!/bin/sh
kernel=; prev=
for a in "$@"; do [ "$prev" = -kernel ] && kernel=$a; prev=$a; done
. "$kernel"
`

// fakeQEMUPath is where TestMain wrote fakeQEMU.
var fakeQEMUPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vmtest-test-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	fakeQEMUPath = filepath.Join(dir, "fake-qemu")
	if err := os.WriteFile(fakeQEMUPath, []byte(fakeQEMU), 0o755); err != nil {
		panic(err)
	}
	m.Run()
}

// fakeConfig returns a Config whose QEMU runs body as the guest.
func fakeConfig(t *testing.T, body string) vm.Config {
	t.Helper()
	kernel := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(kernel, []byte(body+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return vm.Config{QEMU: fakeQEMUPath, Kernel: kernel, Accel: vm.AccelTCG, Timeout: 20 * time.Second}
}

const banner = "[    0.000000] Linux version 6.1.0-fake #1"

func TestPassingRun(t *testing.T) {
	t.Parallel()
	cfg := fakeConfig(t, "echo '"+banner+"'\necho 'bay0: event=ready'\nprintf 'reboot: Power down\\r\\n'\nexit 0")
	r := run(func(r *recorder) {
		v := Boot(r, cfg)
		if got := v.WaitFor(r, "event=ready", 5*time.Second); got != "bay0: event=ready" {
			r.Errorf("WaitFor = %q", got)
		}
		v.ExpectOutcome(r, vm.PoweredOff)
		v.Never(r, "Kernel panic")
	})
	if r.Failed() {
		t.Fatalf("a passing run failed:\n%s", r.log())
	}
	for _, want := range []string{ConsolePrefix + banner, ConsolePrefix + "reboot: Power down\n"} {
		if !strings.Contains(r.log()+"\n", want) {
			t.Errorf("log lacks %q:\n%s", want, r.log())
		}
	}
	if strings.Contains(r.log(), "reproduce with") {
		t.Errorf("a passing run logged the reproduction line:\n%s", r.log())
	}
}

// TestMissingLineFails is the harness self-test: a console line that never comes fails the
// test, the failure quotes the console, and cleanup prints the QEMU command line.
func TestMissingLineFails(t *testing.T) {
	t.Parallel()
	cfg := fakeConfig(t, "echo '"+banner+"'\nexec sleep 30")
	begin := time.Now()
	reached := false
	r := run(func(r *recorder) {
		v := Boot(r, cfg)
		v.WaitFor(r, "bay0: event=ready", 300*time.Millisecond)
		reached = true
	})
	if !r.Failed() || reached {
		t.Fatalf("a missing line did not stop the test:\n%s", r.log())
	}
	log := r.log()
	for _, want := range []string{"bay0: event=ready", "Linux version 6.1.0-fake", "reproduce with:\n" + cfg.QEMU + " -M pc"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "never called Wait") {
		t.Errorf("an already failed test also got the Wait complaint:\n%s", log)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("cleanup did not kill the machine promptly: %v", d)
	}
}

func TestForgottenWaitFails(t *testing.T) {
	t.Parallel()
	cfg := fakeConfig(t, "echo '"+banner+"'\nexec sleep 30")
	r := run(func(r *recorder) {
		v := Boot(r, cfg)
		v.WaitFor(r, "Linux version", 5*time.Second)
	})
	if !r.Failed() || !strings.Contains(r.log(), "never called Wait") {
		t.Fatalf("a test that never waited passed:\n%s", r.log())
	}
}

func TestExpectOutcomeMismatchFails(t *testing.T) {
	t.Parallel()
	cfg := fakeConfig(t, "echo '"+banner+"'\necho 'Kernel panic - not syncing: boom'\nexit 1")
	r := run(func(r *recorder) {
		Boot(r, cfg).ExpectOutcome(r, vm.PoweredOff)
	})
	log := r.log()
	if !r.Failed() || !strings.Contains(log, "machine ended panicked after 1 boots") ||
		!strings.Contains(log, "| Kernel panic - not syncing: boom") {
		t.Fatalf("a wrong outcome passed or was badly reported:\n%s", log)
	}
}

func TestNever(t *testing.T) {
	t.Parallel()
	cfg := fakeConfig(t, "echo '"+banner+"'\necho 'bay0: event=slot-bad slot=A'\nexit 0")
	tests := []struct {
		name     string
		body     func(r *recorder, v *VM)
		wantFail string // "" for a passing run
	}{
		{"absent", func(r *recorder, v *VM) { v.Wait(r); v.Never(r, "rescue shell") }, ""},
		{"present", func(r *recorder, v *VM) { v.Wait(r); v.Never(r, "slot-bad") }, "line 2: bay0: event=slot-bad slot=A"},
		{"before-wait", func(r *recorder, v *VM) { v.Never(r, "x") }, "called before the machine ended"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := run(func(r *recorder) { tt.body(r, Boot(r, cfg)) })
			if tt.wantFail == "" {
				if r.Failed() {
					t.Fatalf("failed:\n%s", r.log())
				}
				return
			}
			if !r.Failed() || !strings.Contains(r.log(), tt.wantFail) {
				t.Fatalf("want a failure mentioning %q:\n%s", tt.wantFail, r.log())
			}
		})
	}
}

func TestKill(t *testing.T) {
	t.Parallel()
	cfg := fakeConfig(t, "echo '"+banner+"'\nexec sleep 30")
	var res vm.Result
	r := run(func(r *recorder) {
		v := Boot(r, cfg)
		v.WaitFor(r, "Linux version", 5*time.Second)
		res = v.Kill(r)
	})
	if r.Failed() || res.Outcome != vm.Killed || res.Boots != 1 {
		t.Fatalf("Kill = %+v:\n%s", res, r.log())
	}
}

func TestStartFailureFails(t *testing.T) {
	t.Parallel()
	cfg := fakeConfig(t, "exit 0")
	cfg.Kernel = filepath.Join(t.TempDir(), "no-such-vmlinux")
	r := run(func(r *recorder) { Boot(r, cfg) })
	if !r.Failed() || !strings.Contains(r.log(), "no-such-vmlinux") {
		t.Fatalf("Boot with a missing kernel did not fail clearly:\n%s", r.log())
	}
}

func TestShellQuote(t *testing.T) {
	t.Parallel()
	got := ShellQuote([]string{"qemu-system-x86_64", "-append", "console=ttyS0 panic=-1", "it's", ""})
	want := `qemu-system-x86_64 -append 'console=ttyS0 panic=-1' 'it'\''s' ''`
	if got != want {
		t.Fatalf("ShellQuote = %s, want %s", got, want)
	}
}
