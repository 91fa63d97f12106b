//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// TestPersonaEnvironment (issue 19.3): what a container user expects inside: the policy's user,
// an open files limit of 65536, /etc/hosts and /etc/resolv.conf made from the policy where the
// tree has none, a way out to the host's network when the owner turns it on (spine vm
// --outbound), and a /dev/shm whose contents count against the persona's memory: filling it
// ends in the OOM killer at memory.max, not in the machine's memory.
func TestPersonaEnvironment(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprint(c, "hello from the host")
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	tree := filepath.Join(t.TempDir(), "envprobe")
	if err := goBuild(filepath.Join(tree, "bin", "envprobe"), "./e2e/testdata/envprobe"); err != nil {
		t.Fatal(err)
	}
	img := buildPersonaSpine(t, neighbour(t), fmt.Sprintf(`[[persona]]
name = "env"
exec = ["/bin/envprobe", "10.0.2.2:%d"]
user = "1000:1000"
cpus = 0.3
memory = "24MiB"
shm_size = "24MiB"
pids = 16
network = "uplink"
address = "10.0.2.15/24"
gateway = "10.0.2.2"
dns = ["10.0.2.3"]
restart = "never"
order = 2
[persona.source]
dir = %q
`, port, tree))
	cfg := machine(makeDisk(t, img, img, nil))
	cfg.Outbound = true
	v := vmtest.Boot(t, cfg)
	v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "env"))
	exited := v.WaitEvent(t, event.PersonaExited, 2*bootTimeout, kv("name", "env"))
	v.Kill(t)
	if r := exited.Value("reason"); !strings.Contains(r, "OOM killer") {
		t.Errorf("filling /dev/shm ended with %q, want the OOM killer at memory.max", r)
	}
	for _, want := range []string{
		"envprobe: ids 1000:1000",
		"envprobe: nofile 65536 65536",
		`envprobe: /etc/hosts "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.0.2.15\tenv\n" <nil>`,
		`envprobe: /etc/resolv.conf "nameserver 10.0.2.3\n" <nil>`,
		fmt.Sprintf(`envprobe: dial 10.0.2.2:%d: read "hello from the host"`, port),
		"envprobe: shm 8 MiB",
	} {
		if v.CountPersona("env", want) != 1 {
			t.Errorf("the probe never said %q", want)
		}
	}
	if v.CountPersona("env", "envprobe: shm 24 MiB") != 0 {
		t.Error("the probe wrote its whole memory limit into /dev/shm")
	}
}
