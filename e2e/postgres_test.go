//go:build e2e

package e2e

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/persistfmt"
	"alpinespine.org/spine/internal/host/provision"
	"alpinespine.org/spine/internal/host/vm"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// pgScript makes the cluster in /data on the first start (initdb refuses to run as root, so this
// proves the user) and then becomes the server, unmodified: no LD_PRELOAD, no patched binary.
// The only settings are the ones a small persona needs: a socket directory it can write, a
// shared_buffers under its memory limit, and clients from outside (QEMU's forward comes from
// 10.0.2.2) on IPv4: listen_addresses = '*' has glibc's getaddrinfo sort two answers through a
// netlink socket, which the default filter refuses (harmlessly: glibc does without).
const pgScript = `set -e
bin=/usr/lib/postgresql/15/bin
if [ ! -s /data/pg/PG_VERSION ]; then
  $bin/initdb -D /data/pg --auth=trust --no-locale -E UTF8 -U postgres --wal-segsize=1
  echo "host all all 0.0.0.0/0 trust" >> /data/pg/pg_hba.conf
fi
exec $bin/postgres -D /data/pg -k /tmp -c listen_addresses=0.0.0.0 -c shared_buffers=16MB -c max_connections=10 \
  -c min_wal_size=4MB -c max_wal_size=16MB`

// postgresPersona is PostgreSQL 15 from Debian's packages, running as the user postgres of its
// own /etc/passwd (the packages' maintainer scripts, which would add it, never run), with its
// cluster in /data and SIGINT (fast shutdown) as its stop signal; bay0 checks its port for
// health (initdb's first run takes a while under emulation: a long start period).
func postgresPersona(t *testing.T) string {
	t.Helper()
	extra := t.TempDir()
	for name, body := range map[string]string{
		"passwd": "root:x:0:0:root:/root:/bin/sh\npostgres:x:104:110:PostgreSQL administrator:/var/lib/postgresql:/bin/sh\n",
		"group":  "root:x:0:\npostgres:x:110:\n",
	} {
		if err := os.MkdirAll(filepath.Join(extra, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(extra, "etc", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return fmt.Sprintf(`[[persona]]
name = "pg"
exec = ["/bin/sh", "-c", %q]
user = "postgres"
stop_signal = "SIGINT"
cpus = 0.6
memory = "192MiB"
pids = 64
data = true
data_size = "100MiB"
network = "uplink"
address = "10.0.2.15/24"
gateway = "10.0.2.2"
order = 2
[persona.health]
tcp = 5432
start_period = "10m"
[persona.source]
debian = ["postgresql-15", "dash"]
dir = %q
`, pgScript, extra)
}

// TestWorkloadPostgresAsItsUser (issues 18.5 and 19.2): PostgreSQL from Debian's packages runs
// unmodified as postgres, with no syscalls line; a client on the host writes rows, and they
// are there after a replace and after a reboot, each of which stops the server cleanly (SIGINT,
// no crash recovery at the next start).
func TestWorkloadPostgresAsItsUser(t *testing.T) {
	t.Parallel()
	img := buildPersonaSpine(t, neighbour(t), postgresPersona(t))
	port := freePort(t)
	// A cluster takes some 40 MiB: more than the shared persist container holds.
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := provision.Create(provision.Options{Out: disk, A: img, B: img, PersistSize: 160 << 20, Seed: t.Name(),
		Passphrase: []byte(e2ePassphrase), KDF: persistfmt.TestKDF()}); err != nil {
		t.Fatalf("create disk: %v", err)
	}
	cfg, sock := withControl(t, machine(disk))
	cfg.Forwards = []vm.Forward{{HostPort: port, GuestPort: 5432, GuestAddr: "10.0.2.15"}}
	cfg.MaxBoots = 2
	cfg.Timeout = 6 * bootTimeout
	v := vmtest.Boot(t, cfg)
	v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "pg"))
	v.WaitEvent(t, event.PersonaHealthy, 3*bootTimeout, kv("name", "pg"))
	pg := dialPostgres(t, port, 3*bootTimeout)
	pg.query(t, "CREATE TABLE kept (v text)")
	pg.query(t, "INSERT INTO kept VALUES ('before replace')")
	if got := pg.query(t, "SELECT current_user, current_setting('data_directory')"); got != "postgres|/data/pg" {
		t.Errorf("server runs as %q", got)
	}
	pg.Close()

	// One client for both requests: QEMU's socket serves one connection at a time.
	ctl := dial(t, sock)
	call(t, ctl, control.Request{Verb: control.VerbReplace, Name: "pg"})
	ended := v.WaitEvent(t, event.PersonaEnded, bootTimeout, kv("name", "pg"))
	if ended.Value("signal") != "SIGINT" || ended.Value("killed") != "false" {
		t.Errorf("pg at the replace: %s, want ended by itself after SIGINT", ended)
	}
	v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "pg"))
	v.WaitEvent(t, event.PersonaHealthy, 2*bootTimeout, kv("name", "pg"))
	pg = dialPostgres(t, port, 2*bootTimeout)
	if got := pg.query(t, "SELECT string_agg(v, ',') FROM kept"); got != "before replace" {
		t.Errorf("after the replace the table holds %q", got)
	}
	// Issue 19.4/19.5: pg's own ring outlives its instances (the replaced one's shutdown is
	// there), and status tells it healthy again.
	if l := logsOf(t, ctl, "pg"); !containsLine(l, "persona pg: ") || !containsLine(l, "database system is shut down") {
		t.Errorf("logs pg after the replace lack the first instance's shutdown: %d lines", len(l))
	}
	var st control.StatusInfo
	if err := call(t, ctl, control.Request{Verb: control.VerbStatus}).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if p := find(st.Personas, "pg"); p.State != "healthy" || p.Health != "ok" || p.MemoryBytes <= 0 {
		t.Errorf("status of pg after the replace: %+v", p)
	}
	pg.query(t, "INSERT INTO kept VALUES ('before reboot')")
	pg.Close()

	call(t, ctl, control.Request{Verb: control.VerbReboot})
	ended = v.WaitEvent(t, event.PersonaEnded, bootTimeout, kv("name", "pg"))
	if ended.Value("killed") != "false" {
		t.Errorf("pg at the reboot: %s, want ended by itself", ended)
	}
	v.WaitEvent(t, event.Halt, bootTimeout, kv("action", "reboot"))
	v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "pg"))
	pg = dialPostgres(t, port, 2*bootTimeout)
	defer pg.Close()
	if got := pg.query(t, "SELECT string_agg(v, ',' ORDER BY v) FROM kept"); got != "before reboot,before replace" {
		t.Errorf("after the reboot the table holds %q", got)
	}
	v.Kill(t)
	// initdb's own shutdown, then the replace's and the reboot's.
	if n := v.CountPersona("pg", "database system was shut down at"); n != 3 {
		t.Errorf("the server found a clean shutdown %d times, want 3 (after initdb, the replace and the reboot)", n)
	}
	v.Never(t, "automatic recovery in progress")
	v.Never(t, "database system was interrupted")
	v.NeverEvent(t, event.PersonaExited, kv("name", "pg"))
	v.NeverEvent(t, event.PersonaDenied, kv("name", "pg"))
}

// pgConn is just enough of PostgreSQL's frontend/backend protocol (version 3.0) for the test:
// a trust startup and simple queries whose rows are joined as "a|b;c|d".
type pgConn struct {
	net.Conn
	r *bufio.Reader
}

// dialPostgres connects through the forward until the server accepts a session.
func dialPostgres(t *testing.T, port int, timeout time.Duration) *pgConn {
	t.Helper()
	var err error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(time.Second) {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second); err != nil {
			continue
		}
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		pc := &pgConn{Conn: c, r: bufio.NewReader(c)}
		if err = pc.startup(); err == nil {
			return pc
		}
		c.Close()
	}
	t.Fatalf("postgres never took a session through the forward: %v", err)
	return nil
}

func (c *pgConn) startup() error {
	var body []byte
	body = binary.BigEndian.AppendUint32(body, 3<<16)
	for _, s := range []string{"user", "postgres", "database", "postgres", ""} {
		body = append(append(body, s...), 0)
	}
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(body)+4))
	if _, err := c.Write(append(msg, body...)); err != nil {
		return err
	}
	_, err := c.until()
	return err
}

// until reads messages up to ReadyForQuery and returns the data rows.
func (c *pgConn) until() ([]string, error) {
	var rows []string
	var failed error
	for {
		typ, err := c.r.ReadByte()
		if err != nil {
			return nil, err
		}
		var n uint32
		if err := binary.Read(c.r, binary.BigEndian, &n); err != nil {
			return nil, err
		}
		if n < 4 || n > 1<<20 {
			return nil, fmt.Errorf("message %q of %d bytes", typ, n)
		}
		body := make([]byte, n-4)
		if _, err := io.ReadFull(c.r, body); err != nil {
			return nil, err
		}
		switch typ {
		case 'R':
			if binary.BigEndian.Uint32(body) != 0 {
				return nil, fmt.Errorf("server wants authentication %d", binary.BigEndian.Uint32(body))
			}
		case 'E':
			failed = errors.New(strings.Join(strings.Split(strings.Trim(string(body), "\x00"), "\x00"), " "))
		case 'D':
			cols := int(binary.BigEndian.Uint16(body))
			var vals []string
			p := body[2:]
			for range cols {
				l := int32(binary.BigEndian.Uint32(p))
				p = p[4:]
				if l < 0 {
					vals = append(vals, "NULL")
					continue
				}
				vals = append(vals, string(p[:l]))
				p = p[l:]
			}
			rows = append(rows, strings.Join(vals, "|"))
		case 'Z':
			return rows, failed
		}
	}
}

// query runs one simple query and returns its rows joined by ";".
func (c *pgConn) query(t *testing.T, sql string) string {
	t.Helper()
	msg := append([]byte{'Q'}, binary.BigEndian.AppendUint32(nil, uint32(len(sql)+5))...)
	if _, err := c.Write(append(append(msg, sql...), 0)); err != nil {
		t.Fatal(err)
	}
	rows, err := c.until()
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return strings.Join(rows, ";")
}
