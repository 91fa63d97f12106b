package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"alpinespine.org/spine/internal/format/event"
)

// tailLines is how many console lines a WaitError carries.
const tailLines = 20

// partialSettle is how long an unterminated console line must stay unchanged before WaitFor
// returns it: prompts such as the LUKS passphrase prompt end without a newline, but a line
// still arriving in pieces should be returned whole.
const partialSettle = 250 * time.Millisecond

// Machine is one running (or finished) QEMU process. Its methods are safe for concurrent use.
type Machine struct {
	args   []string
	cmd    *exec.Cmd
	stdin  io.WriteCloser // QEMU's stdin, closed when QEMU exits
	send   bool           // Send may write to stdin (Config.Stdin is nil)
	stderr tailWriter
	start  time.Time

	done   chan struct{} // closed once the result is final and every console byte delivered
	result Result
	err    error

	mu       sync.Mutex
	lines    []string      // complete console lines, without "\n" or trailing "\r"
	partial  []byte        // the line being received
	lastByte time.Time     // when partial last grew
	cursor   int           // next line index WaitFor examines; len(lines) denotes partial
	changed  chan struct{} // closed and replaced whenever lines, partial or exited change
	boots    int
	maxBoots int
	exited   bool    // console closed and QEMU reaped
	reaped   bool    // QEMU reaped: its process group id may be reused, never signal it
	killedBy Outcome // why this package killed QEMU, 0 if it did not
}

// Start validates cfg, starts QEMU and returns at once. It fails with an error naming the
// missing file if the kernel, initrd or disk does not exist, and with ErrQEMUNotFound if the
// QEMU binary is not installed. The context bounds the whole run: cancelling it kills QEMU
// (Outcome Killed).
func Start(ctx context.Context, cfg Config) (*Machine, error) {
	cfg = withDefaults(cfg)
	if err := validate(cfg); err != nil {
		return nil, err
	}
	qemu, err := exec.LookPath(cfg.QEMU)
	if err != nil {
		return nil, fmt.Errorf("look up %q: %w: %w", cfg.QEMU, ErrQEMUNotFound, err)
	}
	files := []struct{ what, path string }{{"kernel", cfg.Kernel}, {"initrd", cfg.Initrd}, {"disk", cfg.Disk}}
	if cfg.Firmware != nil {
		files = append(files, struct{ what, path string }{"firmware", cfg.Firmware.Code}, struct{ what, path string }{"firmware variables", cfg.Firmware.Vars})
	}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("%s: %w", f.what, err)
		}
	}
	if cfg.CtlSocket != "" {
		if _, err := os.Stat(filepath.Dir(cfg.CtlSocket)); err != nil {
			return nil, fmt.Errorf("control socket directory: %w", err)
		}
	}
	accel := cfg.Accel
	if accel == AccelAuto {
		accel = DetectAccel(ctx, qemu)
	}

	m := &Machine{
		args:     buildArgs(qemu, cfg, accel),
		stderr:   tailWriter{max: 4096},
		done:     make(chan struct{}),
		changed:  make(chan struct{}),
		maxBoots: cfg.MaxBoots,
	}
	m.cmd = exec.Command(qemu, m.args[1:]...)
	m.cmd.Stderr = &m.stderr
	m.cmd.SysProcAttr = sysProcAttr()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	stdout, err := m.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("console pipe: %w", err)
	}
	m.stdin, err = m.cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("console input pipe: %w", err)
	}
	m.start = time.Now()
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", qemu, err)
	}
	if cfg.Stdin != nil {
		// This goroutine may outlive the machine while cfg.Stdin blocks in Read; it ends
		// at the reader's next return, when writing to the closed pipe fails.
		go func() {
			io.Copy(m.stdin, cfg.Stdin)
			m.stdin.Close()
		}()
	} else {
		m.send = true
	}

	consoleDone := make(chan struct{})
	go func() {
		m.readConsole(stdout, cfg.Console)
		close(consoleDone)
	}()
	go m.reap(consoleDone)
	if cfg.Timeout > 0 {
		t := time.AfterFunc(cfg.Timeout, func() { m.kill(TimedOut) })
		go func() { <-m.done; t.Stop() }()
	}
	go func() {
		select {
		case <-ctx.Done():
			m.kill(Killed)
		case <-m.done:
		}
	}()
	return m, nil
}

// reap waits for QEMU to exit and the console to close, then fixes the Result.
func (m *Machine) reap(consoleDone <-chan struct{}) {
	pid := m.cmd.Process.Pid
	exitErr := waitExit(pid)
	end := time.Now()
	m.mu.Lock()
	// QEMU is a zombie, so its group id is still reserved: sweep anything it left in the
	// group (it should have left nothing), then never signal the group again.
	killGroup(pid)
	m.reaped = true
	m.mu.Unlock()
	// exec requires every read from StdoutPipe to finish before Wait; with the whole
	// group dead the pipe has no writer left.
	<-consoleDone
	werr := m.cmd.Wait()
	m.stdin.Close()

	m.mu.Lock()
	defer m.mu.Unlock()
	code, signaled := -1, false
	if ps := m.cmd.ProcessState; ps != nil {
		code = ps.ExitCode()
		signaled = code == -1
	}
	m.result = Result{
		Outcome:  classify(code, signaled, m.killedBy, m.boots),
		Boots:    m.boots,
		ExitCode: code,
		Duration: end.Sub(m.start),
	}
	var ee *exec.ExitError
	switch {
	case exitErr != nil:
		m.result.Outcome = Failed
		m.err = fmt.Errorf("wait for qemu: %w", exitErr)
	case werr != nil && !errors.As(werr, &ee):
		m.result.Outcome = Failed
		m.err = fmt.Errorf("wait for qemu: %w", werr)
	case m.result.Outcome == Failed:
		m.err = &ExitError{Result: m.result, Stderr: string(m.stderr.buf)}
	}
	m.exited = true
	m.broadcast()
	close(m.done)
}

// readConsole copies QEMU's stdout to sink and splits it into lines until QEMU closes it.
func (m *Machine) readConsole(r io.Reader, sink io.Writer) {
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if sink != nil {
				sink.Write(buf[:n]) // a failing sink must not stop the machine
			}
			m.addOutput(buf[:n])
		}
		if err != nil {
			break
		}
	}
	m.mu.Lock()
	if len(m.partial) > 0 {
		m.addLine()
	}
	m.broadcast()
	m.mu.Unlock()
}

func (m *Machine) addOutput(p []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			m.partial = append(m.partial, p...)
			break
		}
		m.partial = append(m.partial, p[:i]...)
		p = p[i+1:]
		m.addLine()
	}
	m.lastByte = time.Now()
	m.broadcast()
}

// addLine completes the partial line. Precondition: m.mu held.
func (m *Machine) addLine() {
	line := strings.TrimRight(string(m.partial), "\r")
	m.partial = m.partial[:0]
	m.lines = append(m.lines, line)
	// Output still in the pipe after a kill is kept but no longer counted.
	if isBanner(line) && m.killedBy == 0 {
		m.boots++
		if m.boots > m.maxBoots {
			m.killLocked(TooManyBoots)
		}
	}
}

// broadcast wakes every waiter. Precondition: m.mu held.
func (m *Machine) broadcast() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// Args returns QEMU's full command line, binary first, for reproducing a run by hand.
func (m *Machine) Args() []string {
	return append([]string(nil), m.args...)
}

// Lines returns every console line received so far, without line endings; an unterminated
// last line is included as it stands.
func (m *Machine) Lines() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := append([]string(nil), m.lines...)
	if len(m.partial) > 0 {
		out = append(out, strings.TrimRight(string(m.partial), "\r"))
	}
	return out
}

// WaitFor returns the first console line containing substr that arrived at or after the
// line matched by the previous WaitFor or WaitForAny (a cursor: no line is matched twice).
// It also matches an unterminated line, such as a prompt, once that line has stopped
// growing. It returns a *WaitError if the machine ends or timeout passes first; a timeout
// <= 0 only examines lines already received.
func (m *Machine) WaitFor(substr string, timeout time.Duration) (string, error) {
	_, line, err := m.WaitForAny([]string{substr}, timeout)
	return line, err
}

// WaitForAny is WaitFor for several substrings: it returns the first line containing any
// of them and the index of the first substring that line contains.
func (m *Machine) WaitForAny(substrs []string, timeout time.Duration) (int, string, error) {
	return m.waitLine(func(line string) int { return matchAny(line, substrs) }, true, substrs, timeout)
}

// WaitForEvent returns the next bay0 event line (see package event) of kind k that carries
// every attribute of want, through the same cursor as WaitFor. Only complete lines that start
// with event.Prefix count: a persona's output, which bay0 prefixes with the persona's name,
// never matches.
func (m *Machine) WaitForEvent(k event.Kind, want []event.Attr, timeout time.Duration) (event.Event, error) {
	var got event.Event
	desc := event.Event{Kind: k, Attrs: want}.String()
	_, _, err := m.waitLine(func(line string) int {
		e, err := event.Parse(line)
		if err != nil || !e.Matches(k, want...) {
			return -1
		}
		got = e
		return 0
	}, false, []string{desc}, timeout)
	return got, err
}

// WaitForLine returns the next complete console line, through the same cursor as WaitFor,
// for which match is true; desc names it in a WaitError.
func (m *Machine) WaitForLine(desc string, match func(line string) bool, timeout time.Duration) (string, error) {
	_, line, err := m.waitLine(func(l string) int {
		if match(l) {
			return 0
		}
		return -1
	}, false, []string{desc}, timeout)
	return line, err
}

// WaitForBoot returns the next kernel banner line (a boot, or a reset's next boot), through the
// same cursor as WaitFor; the banner is anchored at the line's start, where no persona's
// output can be.
func (m *Machine) WaitForBoot(timeout time.Duration) (string, error) {
	return m.WaitForLine("the kernel banner", isBanner, timeout)
}

// waitLine returns the first line at or after the cursor for which match returns an index >=
// 0; partial says whether an unterminated line that has stopped growing may match. desc
// names what is awaited in a WaitError.
func (m *Machine) waitLine(match func(string) int, partial bool, desc []string, timeout time.Duration) (int, string, error) {
	deadline := time.Now().Add(timeout)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var settle *time.Timer
	defer func() {
		if settle != nil {
			settle.Stop()
		}
	}()
	// next is this call's scan position; m.cursor moves only on a match, so a failed wait
	// leaves every unmatched line for the next one.
	next := -1
	for {
		m.mu.Lock()
		if next < m.cursor {
			next = m.cursor
		}
		for ; next < len(m.lines); next++ {
			if i := match(m.lines[next]); i >= 0 {
				line := m.lines[next]
				m.cursor = next + 1
				m.mu.Unlock()
				return i, line, nil
			}
		}
		expired := !time.Now().Before(deadline)
		var settled <-chan time.Time
		if partial && next == len(m.lines) && len(m.partial) > 0 {
			line := strings.TrimRight(string(m.partial), "\r")
			if i := match(line); i >= 0 {
				wait := partialSettle - time.Since(m.lastByte)
				if wait <= 0 || m.exited || expired {
					m.cursor = len(m.lines) + 1 // the partial line, once complete, is consumed
					m.mu.Unlock()
					return i, line, nil
				}
				if settle != nil {
					settle.Stop()
				}
				settle = time.NewTimer(wait)
				settled = settle.C
			}
		}
		if m.exited || expired {
			cause := ErrWaitTimeout
			if m.exited {
				cause = ErrExited
			}
			err := &WaitError{Want: desc, Timeout: timeout, Err: cause, Tail: m.tailLocked(tailLines)}
			m.mu.Unlock()
			return -1, "", err
		}
		changed := m.changed
		m.mu.Unlock()
		select {
		case <-changed:
		case <-settled:
		case <-timer.C:
		}
	}
}

func matchAny(line string, substrs []string) int {
	for i, s := range substrs {
		if strings.Contains(line, s) {
			return i
		}
	}
	return -1
}

// tailLocked returns the last n console lines. Precondition: m.mu held.
func (m *Machine) tailLocked(n int) []string {
	all := m.lines
	if len(m.partial) > 0 {
		all = append(all[:len(all):len(all)], strings.TrimRight(string(m.partial), "\r"))
	}
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return append([]string(nil), all...)
}

// Send writes s to the guest console. It returns ErrStdinConfigured if Config.Stdin feeds
// the console instead.
func (m *Machine) Send(s string) error {
	if !m.send {
		return ErrStdinConfigured
	}
	if _, err := io.WriteString(m.stdin, s); err != nil {
		return fmt.Errorf("send to console: %w", err)
	}
	return nil
}

// Kill ends QEMU at once with SIGKILL, as a power cut would; Outcome Killed. Killing a
// machine that already ended does nothing. It does not wait: call Wait for the Result.
func (m *Machine) Kill() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.killLocked(Killed)
}

func (m *Machine) kill(reason Outcome) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.killLocked(reason)
}

// killLocked records the first kill reason and signals QEMU's process group.
// Precondition: m.mu held.
func (m *Machine) killLocked(reason Outcome) error {
	if m.reaped {
		return nil
	}
	if m.killedBy == 0 {
		m.killedBy = reason
	}
	if err := killGroup(m.cmd.Process.Pid); err != nil {
		return fmt.Errorf("kill qemu: %w", err)
	}
	return nil
}

// Wait blocks until QEMU has exited and every console byte has been delivered, and returns
// the Result. The error is non-nil only for Outcome Failed (an *ExitError carrying QEMU's
// stderr, or the reason exec could not wait). Calling Wait again returns the same values.
func (m *Machine) Wait() (Result, error) {
	<-m.done
	return m.result, m.err
}

// Done returns a channel that is closed when Wait would no longer block.
func (m *Machine) Done() <-chan struct{} {
	return m.done
}
