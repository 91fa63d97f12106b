//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/build"
	"alpinespine.org/spine/internal/host/vm"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// Article III: every persona runs in its own namespaces, bounded by the kernel (CPU, memory,
// processes, system calls), and is replaced, never repaired. The escape probe and the hogs
// misbehave from inside real guests; the neighbour's heartbeat shows the damage stays inside.

// personaTrees builds one tree per demo binary (probe, hog, heartbeat, web), once per run.
var personaTrees struct {
	once sync.Once
	dir  string
	err  error
}

func personaTree(t *testing.T, bin string) string {
	t.Helper()
	personaTrees.once.Do(func() {
		personaTrees.dir = filepath.Join(fx.dir, "persona-trees")
		for _, b := range []string{"probe", "hog", "heartbeat", "web"} {
			out := filepath.Join(personaTrees.dir, b, "bin", b)
			if personaTrees.err = goBuild(out, "./personas/"+b); personaTrees.err != nil {
				return
			}
		}
	})
	if personaTrees.err != nil {
		t.Fatal(personaTrees.err)
	}
	return filepath.Join(personaTrees.dir, bin)
}

// personaEntry renders one [[persona]] table running tree's binary with args.
func personaEntry(t *testing.T, name, bin string, args []string, limits string) string {
	exec := []string{strconv.Quote("/bin/" + bin)}
	for _, a := range args {
		exec = append(exec, strconv.Quote(a))
	}
	return fmt.Sprintf("[[persona]]\nname = %q\nexec = [%s]\n%s\n[persona.source]\ndir = %q\n",
		name, strings.Join(exec, ", "), limits, personaTree(t, bin))
}

// neighbour is a well-behaved persona whose heartbeat must go on whatever its neighbours do.
func neighbour(t *testing.T) string {
	return personaEntry(t, "beat", "heartbeat", nil, "cpus = 0.2\nmemory = \"24MiB\"\npids = 16\norder = 1")
}

// buildPersonaSpine builds a signed Spine with the given [[persona]] tables.
func buildPersonaSpine(t *testing.T, personas ...string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "spine.toml")
	conf := "name = \"personas\"\nversion = 1\n[governor]\n\n" + strings.Join(personas, "\n")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "personas-v1.spine")
	if _, err := build.Build(context.Background(), build.Options{Config: cfg, Key: fx.key, Bay0: fx.bay0, PersonaInit: fx.personaInit, Out: out,
		Epoch: 1767225600, Kernel: fx.kernel.Release}); err != nil {
		t.Fatalf("build spine: %v\n%s", err, conf)
	}
	return out
}

func bootPersonas(t *testing.T, personas ...string) *vmtest.VM {
	t.Helper()
	img := buildPersonaSpine(t, personas...)
	disk := makeDisk(t, img, img, nil)
	v := vmtest.Boot(t, machine(disk))
	waitUp(t, v, "personas", 1, "a", bootTimeout)
	return v
}

var heartbeatRE = regexp.MustCompile(`persona beat: heartbeat (\d+) from beat`)

// heartbeat waits for the neighbour's next heartbeat and returns its number.
func heartbeat(t *testing.T, v *vmtest.VM, timeout time.Duration) int {
	t.Helper()
	line := v.WaitPersona(t, "beat", "heartbeat", timeout)
	m := heartbeatRE.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("heartbeat line %q", line)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// heartbeatGoesOn checks that the neighbour's heartbeat still advances.
func heartbeatGoesOn(t *testing.T, v *vmtest.VM) {
	t.Helper()
	first := heartbeat(t, v, 30*time.Second)
	var last int
	for range 3 {
		last = heartbeat(t, v, 30*time.Second)
	}
	if last <= first {
		t.Errorf("the neighbour's heartbeat went from %d to %d", first, last)
	}
}

func TestPersonaEscapeProbe(t *testing.T) {
	t.Parallel()
	v := bootPersonas(t,
		neighbour(t),
		personaEntry(t, "probe", "probe", []string{"probe"},
			"cpus = 0.5\nmemory = \"64MiB\"\npids = 32\ndata = true\nrestart = \"never\"\norder = 2"))
	v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "probe"))
	done := v.WaitPersona(t, "probe", "probe: done", 2*bootTimeout)
	heartbeatGoesOn(t, v)
	v.Kill(t)
	v.Never(t, "ESCAPE")
	v.NeverEvent(t, event.Halt)
	// The kernel's records of them stay off the console, where they could cut bay0's lines apart.
	v.Never(t, "audit: type=1326")
	if !strings.Contains(done, ", 0 escapes") {
		t.Errorf("probe summary: %q", done)
	}
	// Refusals are never silent: the kernel logs them and bay0 names the persona and the call.
	var denied []string
	for _, e := range v.Events(event.PersonaDenied, kv("name", "probe")) {
		denied = append(denied, e.Value("calls"))
	}
	for _, call := range []string{"mount (165)", "unshare (272)", "bpf (321)"} {
		if !strings.Contains(strings.Join(denied, "; "), call) {
			t.Errorf("bay0 never reported the refusal of %s (it reported %q)", call, denied)
		}
	}
	for _, check := range []string{
		"pid namespace", "network namespace", "uts namespace", "user namespace", "cgroup namespace", "mount namespace",
		"hidden /personas", "hidden /persist", "hidden /bin/heartbeat", "hidden /dev/vda", "no block devices",
		"mknod block device", "write root", "write tree", "write /sys", "write /proc/sys", "write /proc/sysrq-trigger",
		"masked /proc/kcore", "tmp writable",
		"mount", "umount2", "pivot_root", "chroot", "ptrace attach", "ptrace traceme", "kexec_load",
		"kexec_file_load", "init_module", "finit_module", "bpf", "perf_event_open", "keyctl",
		"unshare user namespace", "clone new user namespace", "setns", "reboot", "swapon", "settimeofday",
		"clock_settime", "open_by_handle_at", "socket AF_PACKET SOCK_RAW", "socket AF_INET SOCK_RAW",
		"socket IPPROTO_MPTCP", "socket IPPROTO_UDPLITE", "socket IPPROTO_SCTP", "socketpair AF_INET",
		"io_uring_setup", "userfaultfd", "setuid to another user",
		"int80 system call", "x32 system call",
		"no capabilities CapEff", "no capabilities CapBnd", "no_new_privs", "seccomp filter",
	} {
		if v.CountPersona("probe", "probe: "+check+": ok") == 0 {
			t.Errorf("the probe never reported %q as ok", check)
		}
	}
}

func TestPersonaForkBombStopsAtPidsMax(t *testing.T) {
	t.Parallel()
	const pids = 24
	v := bootPersonas(t,
		neighbour(t),
		personaEntry(t, "bomb", "hog", []string{"forkbomb"}, fmt.Sprintf("cpus = 0.5\nmemory = \"64MiB\"\npids = %d\norder = 2", pids)))
	line := v.WaitPersona(t, "bomb", "hog: forkbomb: fork refused after", bootTimeout)
	var n int
	if _, err := fmt.Sscanf(line[strings.Index(line, "after"):], "after %d forks", &n); err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	if n <= 0 || n >= pids {
		t.Errorf("the fork bomb made %d processes, want between 1 and pids.max %d", n, pids)
	}
	heartbeatGoesOn(t, v)
	v.Kill(t)
	v.NeverEvent(t, event.Halt)
}

func TestPersonaMemoryHogIsReplaced(t *testing.T) {
	t.Parallel()
	v := bootPersonas(t,
		neighbour(t),
		personaEntry(t, "memhog", "hog", []string{"memory"}, "cpus = 0.5\nmemory = \"32MiB\"\npids = 32\norder = 2"))
	first := v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "memhog"))
	v.WaitPersona(t, "memhog", "hog: memory: 8 MiB", bootTimeout)
	wantContains(t, v.WaitEvent(t, event.PersonaExited, bootTimeout, kv("name", "memhog")), "reason", "killed by the OOM killer")
	second := v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "memhog"))
	if first.Value("pid") == second.Value("pid") {
		t.Errorf("the replacement has the same pid: %s", second)
	}
	v.WaitPersona(t, "memhog", "hog: memory: 4 MiB", bootTimeout)
	heartbeatGoesOn(t, v)
	v.Kill(t)
	v.NeverEvent(t, event.Halt)
	v.NeverEvent(t, event.PersonaExited, kv("name", "beat"))
}

func TestPersonaCPUHogHeldToCPUMax(t *testing.T) {
	t.Parallel()
	const cpus = 0.25
	v := bootPersonas(t,
		personaEntry(t, "cpuhog", "hog", []string{"cpu"}, fmt.Sprintf("cpus = %g\nmemory = \"32MiB\"\npids = 32", cpus)))
	re := regexp.MustCompile(`hog: cpu: share ([0-9.]+)`)
	var shares []float64
	for i := range 8 {
		line := v.WaitPersona(t, "cpuhog", "hog: cpu: share", bootTimeout)
		m := re.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("cpu line %q", line)
		}
		s, _ := strconv.ParseFloat(m[1], 64)
		if i >= 2 { // the first seconds include start-up
			shares = append(shares, s)
		}
	}
	v.Kill(t)
	var sum float64
	for _, s := range shares {
		sum += s
	}
	mean := sum / float64(len(shares))
	t.Logf("cpu share of the hog: mean %.3f over %v (cpu.max %g)", mean, shares, cpus)
	if mean > cpus*1.2 || mean < cpus/4 {
		t.Errorf("the CPU hog got %.3f of a CPU on average, want about cpu.max %g", mean, cpus)
	}
}

func TestPersonaReplacementIsFresh(t *testing.T) {
	t.Parallel()
	v := bootPersonas(t,
		personaEntry(t, "fresh", "probe", []string{"fresh"}, "cpus = 0.5\nmemory = \"32MiB\"\npids = 32\ndata = true"))
	for i := 1; i <= 2; i++ {
		v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "fresh"))
		if line := v.WaitPersona(t, "fresh", "probe: fresh: tmp holds", bootTimeout); !strings.HasSuffix(line, "tmp holds []") {
			t.Errorf("instance %d found /tmp not empty: %q", i, line)
		}
		want := fmt.Sprintf("probe: fresh: data counter %d", i)
		if line := v.WaitPersona(t, "fresh", "probe: fresh: data counter", bootTimeout); !strings.HasSuffix(line, want) {
			t.Errorf("instance %d: %q, want %q", i, line, want)
		}
		v.WaitEvent(t, event.PersonaExited, bootTimeout, kv("name", "fresh"), kv("reason", "exit status 0"))
	}
	v.Kill(t)
	v.NeverEvent(t, event.Halt)
}

// TestTinySpinePersonaRuns: the smallest persona the other scenarios boot with (16 MiB, 8 pids,
// a tenth of a CPU) starts, keeps running, and its status lets the trial Spine commit.
func TestTinySpinePersonaRuns(t *testing.T) {
	t.Parallel()
	img := buildSpine(t, spineOpts{})
	disk := makeDisk(t, img, img, nil)
	v := vmtest.Boot(t, machine(disk))
	v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "idle"))
	v.WaitPersona(t, "idle", "heartbeat 3 from idle pid 1", bootTimeout)
	v.Kill(t)
	v.NeverEvent(t, event.PersonaExited, kv("name", "idle"))
	v.NeverEvent(t, event.PersonaFailed)
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestPersonaUplinkServesHost: a persona with network = "uplink" gets eth0 (a macvlan on the
// machine's card) and serves HTTP to the host through a QEMU forward to its own address; its
// visit counter lives in /data. The probe beside it, with no uplink, still sees only lo.
func TestPersonaUplinkServesHost(t *testing.T) {
	t.Parallel()
	img := buildPersonaSpine(t,
		personaEntry(t, "web", "web", []string{":8080"},
			"cpus = 0.5\nmemory = \"64MiB\"\npids = 32\ndata = true\nnetwork = \"uplink\"\n"+
				"address = \"10.0.2.15/24\"\ngateway = \"10.0.2.2\"\norder = 1"),
		personaEntry(t, "probe", "probe", []string{"probe"},
			"cpus = 0.5\nmemory = \"64MiB\"\npids = 32\ndata = true\nrestart = \"never\"\norder = 2"))
	disk := makeDisk(t, img, img, nil)
	port := freePort(t)
	cfg := machine(disk)
	cfg.Forwards = []vm.Forward{{HostPort: port, GuestPort: 8080, GuestAddr: "10.0.2.15"}}
	v := vmtest.Boot(t, cfg)
	v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "web"))
	v.WaitPersona(t, "web", "web: listening on :8080", bootTimeout)
	client := &http.Client{Timeout: 5 * time.Second}
	get := func() (string, error) {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", err
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("status %s: %s", resp.Status, b)
		}
		return string(b), nil
	}
	// The forward accepts at once; the persona answers when its address is reachable.
	var body string
	var err error
	for deadline := time.Now().Add(bootTimeout); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if body, err = get(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("the web persona never answered through the forward: %v", err)
	}
	if want := "hello from persona web: visit 1\n"; body != want {
		t.Errorf("first visit: %q, want %q", body, want)
	}
	if body, err = get(); err != nil || body != "hello from persona web: visit 2\n" {
		t.Errorf("second visit: %q %v, want visit 2", body, err)
	}
	done := v.WaitPersona(t, "probe", "probe: done", 2*bootTimeout)
	v.Kill(t)
	v.Never(t, "ESCAPE")
	v.NeverEvent(t, event.PersonaFailed)
	if v.CountPersona("probe", "probe: network namespace: ok") == 0 {
		t.Errorf("the probe beside an uplink persona saw more than lo (%q)", done)
	}
}
