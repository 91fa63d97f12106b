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
	extra := t.TempDir()
	if err := os.MkdirAll(filepath.Join(extra, "var", "lib", "redis"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(extra, "var", "lib", "redis", "README"), []byte("redis keeps its data in /data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	redis := `[[persona]]
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
[persona.source]
debian = ["redis-server"]
dir = "` + extra + `"
`
	img := buildPersonaSpine(t, neighbour(t), redis)
	port := freePort(t)
	cfg := machine(makeDisk(t, img, img, nil))
	cfg.Forwards = []vm.Forward{{HostPort: port, GuestPort: 6379, GuestAddr: "10.0.2.15"}}
	v := vmtest.Boot(t, cfg)
	v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "redis"))
	v.WaitPersona(t, "redis", "Ready to accept connections", bootTimeout)

	var c net.Conn
	var err error
	for deadline := time.Now().Add(bootTimeout); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if c, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second); err != nil {
			continue
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err = fmt.Fprint(c, "PING\r\n"); err == nil {
			var line string
			if line, err = bufio.NewReader(c).ReadString('\n'); err == nil && line == "+PONG\r\n" {
				break
			}
			err = fmt.Errorf("PING answered %q %v", line, err)
		}
		c.Close()
		c = nil
	}
	if c == nil {
		t.Fatalf("redis never answered through the forward: %v", err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	ask := func(args ...string) string {
		t.Helper()
		var b strings.Builder
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
		if _, err := c.Write([]byte(b.String())); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "$") && line != "$-1\r\n" {
			body, err := r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			line += body
		}
		return line
	}
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
	if n := len(v.Events(event.PersonaStarted, kv("name", "redis"))); n != 1 {
		t.Errorf("redis was started %d times, want once", n)
	}
}
