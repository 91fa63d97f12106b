// Package vmtest boots vm machines inside Go tests and turns what they do into test
// failures.
//
// Boot copies the serial console to t.Logf, kills QEMU when the test ends, and on failure
// logs the QEMU command line so the run can be reproduced by hand. A test that boots must
// end the machine explicitly with Wait, ExpectOutcome or Kill; forgetting to is a failure,
// so a test never passes without having looked at how the machine ended.
//
//	v := vmtest.Boot(t, vm.Config{Kernel: k.Vmlinux, Initrd: initrd, Disk: disk, Timeout: time.Minute})
//	v.WaitEvent(t, event.SlotUp, 30*time.Second, event.Attr{Key: "slot", Value: "a"})
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

	"alpinespine.org/spine/internal/format/event"
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

// WaitEvent returns the next bay0 event of kind k carrying every attribute of want (see
// vm.Machine.WaitForEvent) and fails the test, quoting the last console lines, if it does
// not arrive within timeout.
func (v *VM) WaitEvent(t testing.TB, k event.Kind, timeout time.Duration, want ...event.Attr) event.Event {
	t.Helper()
	e, err := v.m.WaitForEvent(k, want, timeout)
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	return e
}

// WaitBoot waits for the next kernel banner (see vm.Machine.WaitForBoot): the moment a reset
// took effect. It fails the test if none comes within timeout.
func (v *VM) WaitBoot(t testing.TB, timeout time.Duration) {
	t.Helper()
	if _, err := v.m.WaitForBoot(timeout); err != nil {
		t.Fatalf("vmtest: %v", err)
	}
}

// PersonaPrefix starts every console line of a persona's output: bay0 puts it there, so a
// line that starts with it came from that persona and from no other.
func PersonaPrefix(name string) string { return "persona " + name + ": " }

// WaitPersona returns the next line of persona name's own output that contains substr, and
// fails the test if none arrives within timeout. Only lines that start with the persona's
// prefix count: neither bay0 nor another persona can produce them.
func (v *VM) WaitPersona(t testing.TB, name, substr string, timeout time.Duration) string {
	t.Helper()
	p := PersonaPrefix(name)
	line, err := v.m.WaitForLine(p+"..."+substr, func(l string) bool {
		rest, ok := strings.CutPrefix(l, p)
		return ok && strings.Contains(rest, substr)
	}, timeout)
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	return line
}

// CountPersona is the number of lines so far of persona name's own output that contain
// substr (lines that start with its prefix).
func (v *VM) CountPersona(name, substr string) int {
	p, n := PersonaPrefix(name), 0
	for _, l := range v.m.Lines() {
		if rest, ok := strings.CutPrefix(l, p); ok && strings.Contains(rest, substr) {
			n++
		}
	}
	return n
}

// NeverEvent fails the test if bay0 printed an event of kind k carrying every attribute of
// want. Like Never, it judges the whole run and must be called after the machine ended.
func (v *VM) NeverEvent(t testing.TB, k event.Kind, want ...event.Attr) {
	t.Helper()
	if !v.waited.Load() {
		t.Fatalf("vmtest: NeverEvent(%s) called before the machine ended; call Wait first", k)
	}
	for i, l := range v.m.Lines() {
		if e, err := event.Parse(l); err == nil && e.Matches(k, want...) {
			t.Errorf("vmtest: line %d is an event that must never appear: %s", i+1, l)
		}
	}
}

// Events returns every bay0 event line printed so far that is of kind k and carries want.
func (v *VM) Events(k event.Kind, want ...event.Attr) []event.Event {
	var out []event.Event
	for _, l := range v.m.Lines() {
		if e, err := event.Parse(l); err == nil && e.Matches(k, want...) {
			out = append(out, e)
		}
	}
	return out
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
