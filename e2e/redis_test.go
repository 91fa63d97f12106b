//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/vm"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// Issue 18: ordinary programs run under the default allowlist. Redis from Debian's own packages,
// with its stock configuration (only made to run in the foreground, keep its data in /data and
// listen on its uplink), and no syscalls line at all, serves a client on the host: it stores a
// key, saves it to /data and reads it back, and its filter refuses nothing it does. The one
// thing its maintainer script would have made and its stock configuration needs, the directory
// /var/lib/redis, comes from a dir source, as the README says.
func TestWorkloadDebianRedisServesHost(t *testing.T) {
	t.Parallel()
	img := buildPersonaSpine(t, neighbour(t), redisPersona(t), pythonPersona)
	port := freePort(t)
	cfg := machine(makeDisk(t, img, img, nil))
	cfg.Forwards = []vm.Forward{{HostPort: port, GuestPort: 6379, GuestAddr: "10.0.2.15"}}
	v := vmtest.Boot(t, cfg)
	v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "redis"))
	v.WaitEvent(t, event.PersonaHealthy, bootTimeout, kv("name", "redis"))
	// Issue 19.6/19.7: Python's http.server from Debian's python3, its bytecode compiled at
	// build time, answers bay0's first GET (its HTTP health check, on its loopback) this long
	// after its start.
	py := v.WaitEvent(t, event.PersonaHealthy, 2*bootTimeout, kv("name", "py"))
	t.Logf("first request to the Python persona answered %s ms after its start", py.Value("ms"))

	c := dialRedis(t, port)
	defer c.Close()
	ask := c.ask
	if got := ask("SET", "spine", "persona"); got != "+OK\r\n" {
		t.Errorf("SET: %q", got)
	}
	if got := ask("SAVE"); got != "+OK\r\n" {
		t.Errorf("SAVE (to /data): %q", got)
	}
	if got := ask("GET", "spine"); got != "$7\r\npersona\r\n" {
		t.Errorf("GET: %q", got)
	}
	heartbeatGoesOn(t, v)
	v.Kill(t)
	v.NeverEvent(t, event.PersonaExited, kv("name", "redis"))
	v.NeverEvent(t, event.PersonaDenied, kv("name", "redis"))
	for _, n := range []string{"redis", "py"} {
		if c := len(v.Events(event.PersonaStarted, kv("name", n))); c != 1 {
			t.Errorf("%s was started %d times, want once", n, c)
		}
	}
	v.NeverEvent(t, event.PersonaUnhealthy)
}

// pythonPersona is Python's http.server from Debian's python3, on its loopback only, with an
// HTTP health check every 500 ms (so the first answer is timed finely) that calls it unhealthy
// only after ten misses in a row: under TCG on a loaded machine one answer can miss 500 ms.
const pythonPersona = `[[persona]]
name = "py"
exec = ["/usr/bin/python3", "-m", "http.server", "8000", "--bind", "127.0.0.1", "--directory", "/usr/bin"]
cpus = 0.5
memory = "64MiB"
pids = 16
order = 3
[persona.health]
http = "/"
http_port = 8000
interval = "500ms"
retries = 10
start_period = "5m"
[persona.source]
debian = ["python3"]
`

// redisPersona is Redis from Debian's packages with its stock configuration (its snapshot
// schedule included), made only to run in the foreground, keep its data in /data and listen on
// its uplink, 10.0.2.15; bay0 checks its port for health and keeps its logs in /persist.
func redisPersona(t *testing.T) string {
	t.Helper()
	extra := t.TempDir()
	if err := os.MkdirAll(filepath.Join(extra, "var", "lib", "redis"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(extra, "var", "lib", "redis", "README"), []byte("redis keeps its data in /data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return `[[persona]]
name = "redis"
exec = ["/usr/bin/redis-server", "/etc/redis/redis.conf", "--daemonize", "no", "--supervised", "no",
  "--dir", "/data", "--logfile", "", "--pidfile", "", "--bind", "0.0.0.0", "--protected-mode", "no"]
cpus = 0.5
memory = "128MiB"
pids = 32
data = true
network = "uplink"
address = "10.0.2.15/24"
gateway = "10.0.2.2"
order = 2
log_persist = true
[persona.health]
tcp = 6379
start_period = "5m"
[persona.source]
debian = ["redis-server"]
dir = "` + extra + `"
`
}

// redisConn speaks RESP to a Redis on the host's forwarded port.
type redisConn struct {
	t *testing.T
	net.Conn
	r *bufio.Reader
}

// dialRedis connects through the forward, retrying until Redis answers PING.
func dialRedis(t *testing.T, port int) *redisConn {
	t.Helper()
	var err error
	for deadline := time.Now().Add(bootTimeout); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second); err != nil {
			continue
		}
		c.SetDeadline(time.Now().Add(60 * time.Second))
		rc := &redisConn{t: t, Conn: c, r: bufio.NewReader(c)}
		if _, err = fmt.Fprint(c, "PING\r\n"); err == nil {
			var line string
			if line, err = rc.r.ReadString('\n'); err == nil && line == "+PONG\r\n" {
				return rc
			}
			err = fmt.Errorf("PING answered %q %v", line, err)
		}
		c.Close()
	}
	t.Fatalf("redis never answered through the forward: %v", err)
	return nil
}

// ask sends one command and returns its answer (a bulk string with its length line).
func (c *redisConn) ask(args ...string) string {
	c.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		c.t.Fatal(err)
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatal(err)
	}
	if strings.HasPrefix(line, "$") && line != "$-1\r\n" {
		body, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatal(err)
		}
		line += body
	}
	return line
}

// TestWorkloadRedisKeepsKeyAcrossReboot (issue 19.1): a reboot asks every persona to end
// before the machine goes down. Redis with its stock snapshot schedule (nothing due for an hour
// after one change) gets SIGTERM, saves its final snapshot to /data and ends by itself well
// within its stop_timeout; the key set just before `spine ctl reboot` is there after the boot.
func TestWorkloadRedisKeepsKeyAcrossReboot(t *testing.T) {
	t.Parallel()
	img := buildPersonaSpine(t, neighbour(t), redisPersona(t))
	port := freePort(t)
	cfg, sock := withControl(t, machine(makeDisk(t, img, img, nil)))
	cfg.Forwards = []vm.Forward{{HostPort: port, GuestPort: 6379, GuestAddr: "10.0.2.15"}}
	cfg.MaxBoots = 2
	cfg.Timeout = 4 * bootTimeout
	v := vmtest.Boot(t, cfg)
	v.WaitEvent(t, event.PersonaHealthy, bootTimeout, kv("name", "redis"))
	c := dialRedis(t, port)
	if got := c.ask("SET", "spine", "graceful"); got != "+OK\r\n" {
		t.Fatalf("SET: %q", got)
	}
	c.Close()
	// Issue 19.5: status tells redis healthy, with its cgroup's CPU and memory use.
	ctl := dial(t, sock)
	var st control.StatusInfo
	if err := call(t, ctl, control.Request{Verb: control.VerbStatus}).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if r := find(st.Personas, "redis"); r.State != "healthy" || r.Health != "ok" || r.MemoryBytes <= 0 || r.CPUUsec <= 0 {
		t.Errorf("status of redis: %+v, want healthy with its use", r)
	}
	ctl.Close()
	rebootByControl(t, sock)
	ended := v.WaitEvent(t, event.PersonaEnded, bootTimeout, kv("name", "redis"))
	if ended.Value("signal") != "SIGTERM" || ended.Value("killed") != "false" {
		t.Errorf("redis at the reboot: %s, want ended by itself after SIGTERM", ended)
	}
	v.WaitEvent(t, event.PersonasDown, bootTimeout)
	v.WaitEvent(t, event.Halt, bootTimeout, kv("action", "reboot"))
	// Issue 19.4: redis's logs were kept in /persist, and are read back at the next boot.
	kept := v.WaitEvent(t, event.LogsKept, bootTimeout, kv("name", "redis"))
	v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "redis"))
	v.WaitEvent(t, event.PersonaHealthy, bootTimeout, kv("name", "redis"))
	c = dialRedis(t, port)
	defer c.Close()
	if got := c.ask("GET", "spine"); got != "$8\r\ngraceful\r\n" {
		t.Errorf("GET after the reboot: %q, want the key set before it", got)
	}
	if kept.Value("lines") == "0" {
		t.Errorf("%s: nothing read back from the first boot", kept)
	}
	logs := logsOf(t, dial(t, sock), "redis")
	saved, marks := -1, []int{}
	for i, l := range logs {
		switch {
		case strings.HasPrefix(l, "persona redis: ") && strings.Contains(l, "DB saved on disk"):
			saved = i
		case l == "bay0: persona redis: a new boot begins":
			marks = append(marks, i)
		}
	}
	// Two boots: each began with its marker, and the save at the reboot's SIGTERM lies between.
	if len(marks) != 2 || saved < marks[0] || saved > marks[1] {
		t.Errorf("logs redis after the reboot (save at %d, boots at %v):\n%s", saved, marks, strings.Join(logs, "\n"))
	}
	v.Kill(t)
	if n := v.CountPersona("redis", "DB saved on disk"); n != 1 {
		t.Errorf("redis said %d times that it saved its snapshot, want once (at SIGTERM)", n)
	}
	v.NeverEvent(t, event.PersonaExited, kv("name", "redis"))
}
