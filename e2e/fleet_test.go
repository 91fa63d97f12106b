//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/cli"
	"alpinespine.org/spine/internal/host/fleet"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// consoleServer carries a unix control socket over TCP on the loopback, as ser2net or a BMC's
// serial over LAN carries a machine's serial line, and returns its tcp:// address.
func consoleServer(t *testing.T, sock string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("unix", sock)
			if err != nil {
				c.Close()
				continue
			}
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return "tcp://" + l.Addr().String()
}

// runFleet runs `spine fleet` in process and returns its exit status and the final states.
func runFleet(t *testing.T, args ...string) (int, []fleet.Progress, string) {
	t.Helper()
	var out bytes.Buffer
	code := cli.Run(context.Background(), append([]string{"fleet"}, args...), &cli.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out,
		Getenv: func(string) string { return "" }})
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var final []fleet.Progress
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "[") {
			if err := json.Unmarshal([]byte(lines[i]), &final); err != nil {
				t.Fatalf("spine fleet printed %q: %v", lines[i], err)
			}
			break
		}
	}
	return code, final, out.String()
}

// TestFleetRollout (issue 20.3/20.4): three machines, reached over a socket, a unix:// address
// and a TCP console server. A good Spine rolls across all of them (canary first); a Spine that
// fails its health window on the canary halts the rollout with the other two untouched, and the
// canary comes back on the last good Spine by itself.
func TestFleetRollout(t *testing.T) {
	t.Parallel()
	v1 := buildSpine(t, spineOpts{governor: quickHealth})
	v2 := buildSpine(t, spineOpts{version: 2, governor: quickHealth})
	// v3 boots, but a persona of it never passes its health check (nothing listens on its
	// port): the trial never commits, and at its deadline the machine reverts by itself.
	sick := fmt.Sprintf("[[persona]]\nname = \"sick\"\nexec = [\"/bin/heartbeat\"]\ncpus = 0.1\nmemory = \"16MiB\"\npids = 8\n"+
		"[persona.health]\ntcp = 9\ninterval = \"1s\"\nretries = 2\nstart_period = \"3s\"\n[persona.source]\ndir = %q\n", filepath.Join(fx.dir, "tiny-tree"))
	v3 := buildSpine(t, spineOpts{version: 3, personas: sick, governor: quickHealth + "\ntrial_deadline = \"20s\""})

	dir := t.TempDir()
	pub := filepath.Join(dir, "spine.pub")
	if err := os.WriteFile(pub, fx.pub, 0o644); err != nil {
		t.Fatal(err)
	}
	var inv strings.Builder
	vms := make([]*vmtest.VM, 3)
	for i := range vms {
		cfg, sock := withControl(t, machine(makeDisk(t, v1, "", nil)))
		cfg.MaxBoots = 4
		cfg.Timeout = 8 * bootTimeout
		vms[i] = vmtest.Boot(t, cfg)
		control := []string{sock, "unix://" + sock, consoleServer(t, sock)}[i]
		fmt.Fprintf(&inv, "[[machine]]\nname = \"m%d\"\ncontrol = %q\n", i+1, control)
	}
	for _, v := range vms {
		waitUp(t, v, "tiny", 1, "a", bootTimeout)
		v.WaitEvent(t, event.Committed, bootTimeout, kv("slot", "a"))
	}
	invPath := filepath.Join(dir, "fleet.toml")
	if err := os.WriteFile(invPath, []byte(inv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	common := []string{"--inventory", invPath, "--pub", pub, "--json", "--gate", "4m", "--poll", "500ms"}

	code, final, out := runFleet(t, append(common, v2)...)
	if code != 0 || len(final) != 3 {
		t.Fatalf("rollout of v2: exit %d\n%s", code, out)
	}
	for i, p := range final {
		if p.Phase != fleet.Done || p.Version != 2 || p.Slot != "b" {
			t.Errorf("m%d after the rollout of v2: %+v", i+1, p)
		}
		vms[i].WaitEvent(t, event.Committed, bootTimeout, kv("slot", "b"), kv("version", "2"))
	}
	// The canary was committed on v2 before either other machine was offered it.
	if i, j := strings.Index(out, `"machine":"m1","wave":1,"phase":"done"`), strings.Index(out, `"machine":"m2","wave":2,"phase":"updating"`); i < 0 || j < i {
		t.Errorf("the canary did not finish first:\n%s", out)
	}

	code, final, out = runFleet(t, append(common, "--state", filepath.Join(dir, "v3.state.json"), v3)...)
	if code != 1 || len(final) != 3 || !strings.Contains(out, "rollout halted") {
		t.Fatalf("rollout of the failing v3: exit %d\n%s", code, out)
	}
	if p := final[0]; p.Phase != fleet.Failed || p.Version != 2 || !strings.Contains(p.Detail, "reverted") {
		t.Errorf("the canary after v3: %+v", p)
	}
	wantContains(t, vms[0].WaitEvent(t, event.TrialDeadline, bootTimeout, kv("slot", "a")), "missing", "persona sick")
	vms[0].WaitEvent(t, event.Committed, bootTimeout, kv("slot", "b"), kv("version", "2"))
	for i := 1; i < 3; i++ {
		if p := final[i]; p.Phase != fleet.Pending {
			t.Errorf("m%d was touched after the canary failed: %+v", i+1, p)
		}
		if n := len(vms[i].Events(event.UpdateAccepted)); n != 1 {
			t.Errorf("m%d accepted %d updates, want only v2's", i+1, n)
		}
		if n := len(vms[i].Events(event.SlotUp)); n != 2 {
			t.Errorf("m%d came up %d times, want 2 (v1, then v2)", i+1, n)
		}
	}
	for _, v := range vms {
		v.Kill(t)
	}
}
