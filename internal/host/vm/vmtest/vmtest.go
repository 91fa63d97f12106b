// Package vmtest boots vm machines inside Go tests and turns what they do into test
// failures.
//
// Boot copies the serial console to t.Logf, kills QEMU when the test ends, and on failure
// logs the QEMU command line so the run can be reproduced by hand. A test that boots must
// end the machine explicitly with Wait, ExpectOutcome or Kill; forgetting to is a failure,
// so a test never passes without having looked at how the machine ended.
//
//	v := vmtest.Boot(t, vm.Config{Kernel: k.Vmlinux, Initrd: initrd, Disk: disk, Timeout: time.Minute})
//	v.WaitFor(t, "bay0: event=ready", 30*time.Second)
//	v.ExpectOutcome(t, vm.PoweredOff)
//	v.Never(t, "Kernel panic")
package vmtest

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"alpinespine.org/spine/internal/host/vm"
)

// ConsolePrefix starts every console line logged to the test.
const ConsolePrefix = "console| "

// tailLines is how many console lines ExpectOutcome quotes.
const tailLines = 20

// VM is a machine booted for one test.
type VM struct {
	m      *vm.Machine
	log    *logWriter
	waited atomic.Bool
}

// Boot starts a machine for cfg and fails the test at once if it cannot start. The console
// goes to t.Logf (and to cfg.Console, if set). A cleanup kills QEMU and waits for it; it
// fails the test if the test never called Wait, ExpectOutcome or Kill, and logs the QEMU
// command line if the test failed. The machine is also killed when t's context ends.
func Boot(t testing.TB, cfg vm.Config) *VM {
	t.Helper()
	lw := &logWriter{t: t}
	if cfg.Console != nil {
		cfg.Console = io.MultiWriter(cfg.Console, lw)
	} else {
		cfg.Console = lw
	}
	m, err := vm.Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("vmtest: start machine: %v", err)
	}
	v := &VM{m: m, log: lw}
	t.Cleanup(func() {
		m.Kill()
		res, _ := m.Wait()
		lw.flush()
		if !v.waited.Load() && !t.Failed() {
			t.Errorf("vmtest: the test never called Wait, ExpectOutcome or Kill; the machine was killed at cleanup")
		}
		if t.Failed() {
			t.Logf("vmtest: machine ended %v after %d boots (exit status %d, %v); reproduce with:\n%s",
				res.Outcome, res.Boots, res.ExitCode, res.Duration.Round(time.Millisecond), ShellQuote(m.Args()))
		}
	})
	return v
}

// Machine returns the underlying machine, for Send, Lines, WaitForAny and the control socket.
func (v *VM) Machine() *vm.Machine {
	return v.m
}

// WaitFor returns the next console line containing substr (see vm.Machine.WaitFor) and
// fails the test, quoting the last console lines, if it does not arrive within timeout.
func (v *VM) WaitFor(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	line, err := v.m.WaitFor(substr, timeout)
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	return line
}

// Wait waits for the machine to end and returns the Result. It does not judge the
// Outcome (ExpectOutcome does); a Failed run's QEMU error is logged.
func (v *VM) Wait(t testing.TB) vm.Result {
	t.Helper()
	res, err := v.m.Wait()
	v.log.flush()
	v.waited.Store(true)
	if err != nil {
		t.Logf("vmtest: %v", err)
	}
	return res
}

// ExpectOutcome waits for the machine to end and fails the test unless it ended with want.
func (v *VM) ExpectOutcome(t testing.TB, want vm.Outcome) vm.Result {
	t.Helper()
	res, err := v.m.Wait()
	v.log.flush()
	v.waited.Store(true)
	if res.Outcome != want {
		msg := fmt.Sprintf("vmtest: machine ended %v after %d boots (exit status %d, %v), want %v",
			res.Outcome, res.Boots, res.ExitCode, res.Duration.Round(time.Millisecond), want)
		if err != nil {
			msg += "\n" + err.Error()
		}
		t.Fatalf("%s\nlast console lines:\n%s", msg, tail(v.m.Lines(), tailLines))
	}
	return res
}

// Kill cuts the machine's power (SIGKILL to QEMU), waits for it to end and returns the
// Result, whose Outcome is vm.Killed unless the machine had already ended.
func (v *VM) Kill(t testing.TB) vm.Result {
	t.Helper()
	if err := v.m.Kill(); err != nil {
		t.Errorf("vmtest: %v", err)
	}
	return v.Wait(t)
}

// Never fails the test if any console line contains substr. It judges the whole run, so
// it must be called after Wait, ExpectOutcome or Kill.
func (v *VM) Never(t testing.TB, substr string) {
	t.Helper()
	if !v.waited.Load() {
		t.Fatalf("vmtest: Never(%q) called before the machine ended; call Wait first", substr)
	}
	var bad []string
	for i, l := range v.m.Lines() {
		if strings.Contains(l, substr) {
			bad = append(bad, fmt.Sprintf("\tline %d: %s", i+1, l))
		}
	}
	if len(bad) > 0 {
		t.Errorf("vmtest: console contains %q, which must never appear:\n%s", substr, strings.Join(bad, "\n"))
	}
}

// ShellQuote renders args as one shell command line that pastes back into a shell.
func ShellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = quote(a)
	}
	return strings.Join(q, " ")
}

func quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=/.,:@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func tail(lines []string, n int) string {
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 0 {
		return "\t(no console output)"
	}
	return "\t| " + strings.Join(lines, "\n\t| ")
}

// logWriter turns console bytes into one t.Logf call per line. Boot's cleanup waits for
// the machine, so no call happens after the test has completed.
type logWriter struct {
	t   testing.TB
	mu  sync.Mutex
	buf []byte
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

// flush logs an unterminated last line.
func (w *logWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = nil
	}
}

// emit logs one line. Precondition: w.mu held.
func (w *logWriter) emit(line []byte) {
	w.t.Logf("%s%s", ConsolePrefix, strings.TrimRight(string(line), "\r"))
}

// Saw reports whether any console line so far contains substr.
func (v *VM) Saw(substr string) bool { return v.Count(substr) > 0 }

// Count is the number of console lines so far that contain substr.
func (v *VM) Count(substr string) int {
	n := 0
	for _, l := range v.Machine().Lines() {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}
