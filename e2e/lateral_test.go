//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/vm"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// Article VII §2 (no lateral movement) and Article III §2 (an IPC namespace of its own): three
// uplinked personas on one card try to reach each other by unicast UDP and TCP, subnet and
// limited broadcast, IPv4 and IPv6 multicast, System V shared memory and POSIX message queues,
// each answering whatever it hears. Two have IPv6 (their own addresses), one has none. The host
// reaches each one through its own forward, so the uplinks work; nothing crosses between them.

type lateralPersona struct {
	name, addr, addr6 string
	port              int
}

func TestPersonaNoLateralMovement(t *testing.T) {
	t.Parallel()
	ps := []lateralPersona{
		{name: "la", addr: "10.0.2.15", addr6: "fd00::15"},
		{name: "lb", addr: "10.0.2.16", addr6: "fd00::16"},
		{name: "lc", addr: "10.0.2.17"},
	}
	var entries []string
	var forwards []vm.Forward
	for i := range ps {
		p := &ps[i]
		p.port = freePort(t)
		forwards = append(forwards, vm.Forward{HostPort: p.port, GuestPort: 7778, GuestAddr: p.addr})
		args := []string{"lateral", "-name", p.name, "-addr", p.addr + "/24", "-gw", "10.0.2.2"}
		limits := fmt.Sprintf("cpus = 0.3\nmemory = \"48MiB\"\npids = 32\nnetwork = \"uplink\"\naddress = \"%s/24\"\ngateway = \"10.0.2.2\"\norder = %d\n", p.addr, i+1)
		if p.addr6 != "" {
			args = append(args, "-addr6", p.addr6+"/64")
			limits += fmt.Sprintf("address6 = \"%s/64\"\n", p.addr6)
		}
		var names []string
		for _, q := range ps {
			if q.name == p.name {
				continue
			}
			names = append(names, q.name)
			args = append(args, "-peer", q.addr)
			if q.addr6 != "" {
				args = append(args, "-peer", q.addr6)
			}
		}
		args = append(args, "-peers", strings.Join(names, ","))
		entries = append(entries, personaEntry(t, p.name, "probe", args, limits))
	}
	img := buildPersonaSpine(t, entries...)
	cfg := machine(makeDisk(t, img, img, nil))
	cfg.Forwards = forwards
	// Three probes send for 20 s each after a staggered start: more than one boot's worth on a
	// loaded machine.
	cfg.Timeout = 5 * time.Minute
	v := vmtest.Boot(t, cfg)
	// Every probe is still sending when the last one starts: each direction is tried.
	v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "lc"))
	// The probes finish in any order: take each one's report as it comes.
	var dones []string
	seen := map[string]bool{}
	for range ps {
		line, err := v.Machine().WaitForLine("a probe's \"probe: lateral: done\"", func(l string) bool {
			for _, p := range ps {
				pre := vmtest.PersonaPrefix(p.name)
				if !seen[p.name] && strings.HasPrefix(l, pre) && strings.Contains(l[len(pre):], "probe: lateral: done") {
					seen[p.name] = true
					return true
				}
			}
			return false
		}, 2*bootTimeout)
		if err != nil {
			t.Fatalf("vmtest: %v (reports so far from %v)", err, seen)
		}
		dones = append(dones, line)
	}
	for _, p := range ps {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.port), 10*time.Second)
		if err != nil {
			t.Fatalf("forward to %s: %v", p.name, err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if want := "probe " + p.name + "\n"; line != want {
			t.Errorf("the host through the forward to %s got %q %v, want %q", p.addr, line, err, want)
		}
	}
	v.Kill(t)
	v.Never(t, "ESCAPE")
	v.NeverEvent(t, event.PersonaFailed)
	for _, d := range dones {
		var name string
		var checks, escapes, sent int
		if _, err := fmt.Sscanf(d[strings.Index(d, "probe: lateral: done"):], "probe: lateral: done %s %d checks, %d escapes, %d broadcast", &name, &checks, &escapes, &sent); err != nil {
			t.Fatalf("parse %q: %v", d, err)
		}
		if escapes != 0 || sent == 0 {
			t.Errorf("%s: %d escapes, %d broadcast and multicast datagrams sent (want 0 and some)", name, escapes, sent)
		}
	}
	for _, check := range []string{"uplink ipv4 addresses", "uplink ipv4 routes", "routes refuse every other persona",
		"uplink ipv6 addresses", "unicast to 10.0.2.16", "unicast to fd00::16", "nothing from another persona",
		"ipc namespace: exclusive shm key", "ipc namespace: exclusive mqueue", "ipc namespace: shm of lb invisible",
		"ipc namespace: mqueue of lb invisible"} {
		n := 0
		for _, p := range ps {
			n += v.CountPersona(p.name, "probe: "+check+": ok")
		}
		if n == 0 {
			t.Errorf("no probe reported %q as ok", check)
		}
	}
	for _, p := range ps {
		if v.CountPersona(p.name, "probe: lateral: the host reached "+p.name) == 0 {
			t.Errorf("%s never saw the host's connection", p.name)
		}
	}
}
