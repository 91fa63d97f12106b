package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/host/ctlclient"
)

// ctlHandler is a governor stand-in with fixed answers.
type ctlHandler struct{}

func (h *ctlHandler) Status() (control.StatusInfo, error) {
	return control.StatusInfo{Spine: "demo", Version: 3, Slot: "a", MinVersion: 2,
		Slots: []control.SlotInfo{
			{Slot: "a", State: "good", Version: 3},
			{Slot: "b", State: "trial", Version: 4, TriesLeft: 1, Reason: "verity: root hash mismatch"},
		},
		UptimeMS: 12345, PersistMounted: true,
		Kernel:    control.KernelInfo{Release: "6.1.192-spine", Version: "#1 SMP PREEMPT_DYNAMIC Thu Jan  1 00:00:00 UTC 2026", SHA256: "5e1f"},
		Watchdog:  control.WatchdogInfo{Enabled: true, TimeoutMS: 10000, SinceFeedMS: ptr(uint64(400))},
		LastReset: "fatal: persona web: supervisor hung", Committed: true,
		Denied: []string{"persona web: denied syscall accept4 (288), 3 times"},
		Personas: []control.PersonaInfo{{Name: "web", State: "healthy", PID: 212, Restarts: 1, CPUPercent: 99.5, MemoryBytes: 13 << 20, Health: "ok"},
			{Name: "db", State: "exited", LastExit: "exit status 0"}}}, nil
}

func (h *ctlHandler) Personas() ([]control.PersonaInfo, error) {
	return []control.PersonaInfo{
		{Name: "web", State: "healthy", PID: 212, Restarts: 1, CPUPercent: 99.5, MemoryBytes: 13 << 20, Health: "ok",
			Limits: control.Limits{CPUMax: "50000 100000", MemoryMax: "67108864", PidsMax: "64"}, LastExit: "exit status 1",
			Denied: []string{"accept4 (288), 3 times"}},
		{Name: "db", State: "stopped", Limits: control.Limits{CPUMax: "max", MemoryMax: "max", PidsMax: "max"}},
	}, nil
}

func (h *ctlHandler) Logs(name string, after uint64) (control.LogsResult, error) {
	if name == "web" {
		return control.LogsResult{Lines: []string{"persona web: listening"}, First: 1, Next: 1}, nil
	}
	return control.LogsResult{Lines: []string{"bay0: event=slot-up slot=a version=3 name=demo", "bay0: persona web started", "persona web: bay0: event=halt"}, First: 1, Next: 3}, nil
}

func (h *ctlHandler) Replace(n string) error { return h.act("replace", n) }
func (h *ctlHandler) Stop(n string) error    { return h.act("stop", n) }
func (h *ctlHandler) Start(n string) error   { return h.act("start", n) }
func (h *ctlHandler) Reboot() error          { return h.act("reboot", "") }
func (h *ctlHandler) Poweroff() error        { return h.act("poweroff", "") }

func (h *ctlHandler) act(verb, name string) error {
	if name != "" && name != "web" && name != "db" {
		return errors.New(`no persona "` + name + `"`)
	}
	return nil
}

// ctlSocket serves h on a unix socket, one Serve per connection. A Serve whose client hung
// up waits for more on its line until the test ends, as the governor's would.
func ctlSocket(t *testing.T, h control.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				control.Serve(ctx, c, h, nil)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() { cancel(); l.Close(); wg.Wait() })
	return sock
}

func runSpine(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Run(context.Background(), args, &Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }})
	return code, out.String(), errOut.String()
}

// TestCtlTables pins what people and scripts see.
func TestCtlTables(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"status"}, `spine:        demo v3 (slot a)
kernel:       6.1.192-spine (#1 SMP PREEMPT_DYNAMIC Thu Jan  1 00:00:00 UTC 2026), the slot's, sha256 5e1f
uptime:       12.345s
persist:      mounted
watchdog:     enabled, timeout 10s, fed 400ms ago
min version:  2
last reset:   fatal: persona web: supervisor hung

SLOT  STATE  VERSION  TRIES  REASON
a     good   3        0      -
b     trial  4        1      verity: root hash mismatch

PERSONA  STATE    RESTARTS  CPU    MEMORY   HEALTH  LAST EXIT
web      healthy  1         99.5%  13.0MiB  ok      -
db       exited   0         -      -        -       exit status 0
persona web: denied syscall accept4 (288), 3 times
`},
		{[]string{"personas"}, `NAME  STATE    PID  RESTARTS  CPU    MEMORY   CPU.MAX       MEMORY.MAX  PIDS.MAX  HEALTH  LAST EXIT
web   healthy  212  1         99.5%  13.0MiB  50000 100000  67108864    64        ok      exit status 1
db    stopped  -    0         -      -        max           max         max       -       -
persona web: denied syscall accept4 (288), 3 times
`},
		{[]string{"logs"}, "bay0: event=slot-up slot=a version=3 name=demo\nbay0: persona web started\npersona web: bay0: event=halt\n"},
		{[]string{"--events", "logs"}, "bay0: event=slot-up slot=a version=3 name=demo\n"},
		{[]string{"logs", "web"}, "persona web: listening\n"},
		{[]string{"stop", "web"}, "ok: stop web\n"},
		{[]string{"replace", "db"}, "ok: replace db\n"},
		{[]string{"reboot"}, "ok: reboot\n"},
		{[]string{"personas", "--json"}, `{"personas":[{"name":"web","state":"healthy","pid":212,"restarts":1,"limits":{"cpu.max":"50000 100000","memory.max":"67108864","pids.max":"64"},"last_exit":"exit status 1","denied":["accept4 (288), 3 times"],"health":"ok","cpu_percent":99.5,"memory_bytes":13631488},{"name":"db","state":"stopped","pid":0,"restarts":0,"limits":{"cpu.max":"max","memory.max":"max","pids.max":"max"},"last_exit":""}]}` + "\n"},
		{[]string{"--json", "start", "web"}, "{}\n"},
	} {
		h := &ctlHandler{}
		sock := ctlSocket(t, h)
		code, out, errOut := runSpine(t, append([]string{"ctl", "--socket", sock}, tc.args...)...)
		if code != 0 || out != tc.want {
			t.Errorf("spine ctl %v: exit %d, stderr %q\n got:\n%s\nwant:\n%s", tc.args, code, errOut, out, tc.want)
		}
	}
}

func TestCtlErrors(t *testing.T) {
	sock := ctlSocket(t, &ctlHandler{})
	for _, tc := range []struct {
		args    []string
		code    int
		wantErr string
	}{
		// The governor refuses: exit 1 with its message.
		{[]string{"--socket", sock, "stop", "nope"}, 1, `spine ctl: bay0: stop: no persona "nope"` + "\n"},
		{[]string{"--socket", sock, "update"}, 2, ""},
		{[]string{"--socket", sock, "update", "/nonexistent.spine"}, 1, "spine ctl: open image: open /nonexistent.spine: no such file or directory\n"},
		// Refused before sending.
		{[]string{"--socket", sock, "exec", "sh"}, 1, `spine ctl: unknown verb "exec"` + "\n"},
		{[]string{"--socket", sock, "stop"}, 1, "spine ctl: missing field \"name\": stop needs a persona name\n"},
		{[]string{"--socket", sock, "status", "web"}, 1, "spine ctl: field not allowed \"name\" for status\n"},
		// Usage.
		{[]string{"status"}, 2, "usage: spine ctl"},
		{[]string{"--socket", sock, "--follow", "status"}, 2, "usage: spine ctl"},
		{[]string{"--socket", sock}, 2, "usage: spine ctl"},
		{[]string{"--socket", filepath.Join(t.TempDir(), "none"), "status"}, 1, "dial control line"},
	} {
		code, out, errOut := runSpine(t, append([]string{"ctl"}, tc.args...)...)
		if code != tc.code || !strings.Contains(errOut, tc.wantErr) || out != "" {
			t.Errorf("spine ctl %v: exit %d, stdout %q, stderr %q; want exit %d and %q", tc.args, code, out, errOut, tc.code, tc.wantErr)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// growingLogs is a persona whose ring holds its last 2 lines of a growing log: each request
// adds a line, and one request adds three (so one line is pushed out unread).
type growingLogs struct {
	ctlHandler
	mu    sync.Mutex
	lines []string
}

func (h *growingLogs) Logs(_ string, after uint64) (control.LogsResult, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	add := 1
	if len(h.lines) == 2 {
		add = 3
	}
	for range add {
		h.lines = append(h.lines, fmt.Sprintf("persona web: line %d", len(h.lines)+1))
	}
	next := uint64(len(h.lines))
	first := max(after+1, next-1)
	return control.LogsResult{Lines: h.lines[first-1:], First: first, Next: next}, nil
}

// TestCtlLogsFollow: --follow prints each line once, in order, and says how many were pushed out
// between two requests.
func TestCtlLogsFollow(t *testing.T) {
	h := &growingLogs{}
	c, err := ctlclient.Dial(ctlSocket(t, h))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut lockedBuffer
	out.onWrite = func(s string) {
		if strings.Contains(s, "line 7") {
			cancel()
		}
	}
	if err := followLogs(ctx, &out, &errOut, c, control.Request{Verb: control.VerbLogs, Name: "web"}, time.Second, false); err != nil {
		t.Fatal(err)
	}
	want := "persona web: line 1\npersona web: line 2\npersona web: line 4\npersona web: line 5\npersona web: line 6\npersona web: line 7\n"
	if out.String() != want || errOut.String() != "spine ctl logs: 1 lines were pushed out before they could be read\n" {
		t.Errorf("followed:\n%s\nstderr %q", out.String(), errOut.String())
	}
}

type lockedBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	onWrite func(string)
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	n, err := l.b.Write(p)
	l.mu.Unlock()
	if l.onWrite != nil {
		l.onWrite(string(p))
	}
	return n, err
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
