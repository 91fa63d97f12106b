package persona

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/launch"
	"alpinespine.org/spine/internal/format/policy"
)

func samplePolicy() policy.Persona {
	return policy.Persona{Name: "web", Exec: []string{"/bin/web", ":8080"}, Env: []string{"A=1"}, CPUs: 0.5,
		Memory: 64 << 20, Pids: 32, TmpSize: 16 << 20, RunSize: 1 << 20, ShmSize: 8 << 20, Data: true, Network: "none", Restart: "always",
		Rlimits: map[string]uint64{"nofile": 65536, "core": 0}}
}

func TestNewSpec(t *testing.T) {
	s, err := NewSpec(samplePolicy(), 2, "/", "/persist", []byte{1, 2, 3, 4, 5, 6, 7, 8})
	if err != nil {
		t.Fatal(err)
	}
	if s.Tree != "/personas/web" || s.DataDir != "/persist/web" || s.UID != 100000+2*65536 || s.GID != s.UID {
		t.Errorf("spec: %+v", s)
	}
	want := Limits{CPUMax: "50000 100000", MemoryMax: 64 << 20, PidsMax: 32}
	if s.Limits != want {
		t.Errorf("limits %+v, want %+v", s.Limits, want)
	}
	if _, err := NewSpec(samplePolicy(), 0, "/", "", nil); !errors.Is(err, ErrNoPersist) {
		t.Errorf("data without /persist: %v, want ErrNoPersist", err)
	}
	p := samplePolicy()
	if s.Uplink != nil || s.Config().Uplink != nil {
		t.Errorf("network none has an uplink: %+v", s.Uplink)
	}
	p.Network, p.Address, p.Gateway = "uplink", "10.0.2.15/24", "10.0.2.2"
	s, err = NewSpec(p, 0, "/", "/persist", nil)
	if err != nil {
		t.Fatal(err)
	}
	if u := s.Config().Uplink; u == nil || !reflect.DeepEqual(*u, launch.Uplink{Address: "10.0.2.15/24", Gateway: "10.0.2.2"}) {
		t.Errorf("uplink config %+v", u)
	}
	p.Address = "10.0.2.15"
	if _, err := NewSpec(p, 0, "/", "/persist", nil); err == nil {
		t.Error("an uplink address without a prefix length was accepted")
	}
	p = samplePolicy()
	if s.Config().User != nil {
		t.Errorf("no user, but the config has %+v", s.Config().User)
	}
	p.User = "104:110"
	if s, err = NewSpec(p, 1, "/", "/persist", nil); err != nil || s.RunAs != (launch.IDs{UID: 104, GID: 110}) || *s.Config().User != s.RunAs {
		t.Errorf("user 104:110: %+v %v", s.RunAs, err)
	}
	if uid, gid := s.RunAs.Host(s.UID); uid != IDRange(1)+104 || gid != IDRange(1)+110 {
		t.Errorf("host ids of 104:110 in persona 1: %d:%d", uid, gid)
	}
	p.User = "postgres"
	if _, err := NewSpec(p, 1, "/", "/persist", nil); !errors.Is(err, policy.ErrUserName) {
		t.Errorf("a user name bay0 cannot resolve: %v", err)
	}
}

// TestEnvironmentFiles: what a tree without its own /etc/hosts and /etc/resolv.conf gets, and
// the rlimits in the order they are set.
func TestSpecRlimits(t *testing.T) {
	s, err := NewSpec(samplePolicy(), 0, "/", "/persist", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []launch.Rlimit{{Resource: unix.RLIMIT_CORE, Value: 0}, {Resource: unix.RLIMIT_NOFILE, Value: 65536}}; !reflect.DeepEqual(s.Rlimits, want) || s.ShmSize != 8<<20 {
		t.Errorf("rlimits %v, shm %d", s.Rlimits, s.ShmSize)
	}
}

func TestUplinkMAC(t *testing.T) {
	nic := []byte("52:54:00:12:34:56")
	a, b := UplinkMAC(nic, "web"), UplinkMAC(nic, "api")
	if a == b || a != UplinkMAC(nic, "web") || a == UplinkMAC([]byte("52:54:00:12:34:57"), "web") {
		t.Errorf("MACs %x %x are not stable and distinct", a, b)
	}
	for _, m := range [][6]byte{a, b} {
		if m[0]&1 != 0 || m[0]&2 == 0 {
			t.Errorf("%x is not locally administered unicast", m)
		}
	}
}

func TestSiblings(t *testing.T) {
	pol := policy.Policy{Personas: []policy.Persona{
		{Name: "a", Network: "uplink", Address: "10.0.2.15/24", Address6: "fd00::15/64"},
		{Name: "b", Network: "uplink", Address: "10.0.2.16/24"},
		{Name: "c", Network: "none"},
	}}
	if got := fmt.Sprint(Siblings(pol, "b")); got != "[10.0.2.15 fd00::15]" {
		t.Errorf("siblings of b: %s", got)
	}
	if got := fmt.Sprint(Siblings(pol, "c")); got != "[10.0.2.15 fd00::15 10.0.2.16]" {
		t.Errorf("siblings of c: %s", got)
	}
}

func TestIDRangesDoNotOverlap(t *testing.T) {
	if policy.MaxID+1 != IDBlock {
		t.Errorf("the policy allows ids up to %d, a persona's namespace maps %d", policy.MaxID, IDBlock)
	}
	for i := range 100 {
		if IDRange(i+1)-IDRange(i) != IDBlock || IDRange(i) < IDBase {
			t.Fatalf("range %d overlaps its neighbour", i)
		}
	}
}

func TestCgroupFiles(t *testing.T) {
	l := Limits{CPUMax: "10000 100000", MemoryMax: 16 << 20, PidsMax: 8}
	want := []CgroupFile{
		{"memory.max", "16777216"},
		{"memory.swap.max", "0"},
		{"memory.oom.group", "1"},
		{"pids.max", "8"},
	}
	if got := l.Files(); !reflect.DeepEqual(got, want) {
		t.Errorf("Files() = %v, want %v", got, want)
	}
	if got := l.ExecFiles(); !reflect.DeepEqual(got, []CgroupFile{{"cpu.max", "10000 100000"}}) {
		t.Errorf("ExecFiles() = %v", got)
	}
	if SubtreeControl != "+cpu +memory +pids" {
		t.Errorf("SubtreeControl %q", SubtreeControl)
	}
}

func TestParseKeyed(t *testing.T) {
	m, err := ParseKeyed(strings.NewReader("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 1\n"))
	if err != nil || m["oom_kill"] != 2 || m["max"] != 12 {
		t.Errorf("ParseKeyed: %v %v", m, err)
	}
	if _, err := ParseKeyed(strings.NewReader("populated x\n")); err == nil {
		t.Error("a non-number was accepted")
	}
}

func sampleConfig() launch.Config {
	p := samplePolicy()
	p.Network, p.Address, p.Gateway = "uplink", "10.0.2.15/24", "10.0.2.2"
	s, _ := NewSpec(p, 0, "/", "/persist", []byte{1, 2, 3, 4, 5, 6, 7, 8})
	c := s.Config()
	c.Uplink.Device = "up42"
	c.User = &launch.IDs{UID: 104, GID: 110}
	c.DNS = []string{"10.0.2.3"}
	return c
}

func TestConfigRoundTrip(t *testing.T) {
	c := sampleConfig()
	var b bytes.Buffer
	if err := c.Encode(&b); err != nil {
		t.Fatal(err)
	}
	got, err := launch.DecodeConfig(&b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Errorf("round trip: %+v, want %+v", got, c)
	}
}

func TestReadReports(t *testing.T) {
	released := 0
	release := func() error { released++; return nil }
	var b bytes.Buffer
	launch.WriteReport(&b, launch.Report{Stage: launch.StageReady})
	launch.WriteReport(&b, launch.Report{Stage: launch.StageExec})
	if _, err := ReadReports(&b, release); err != nil || released != 1 {
		t.Errorf("ready, exec then EOF: %v, released %d times", err, released)
	}
	if _, err := ReadReports(strings.NewReader(""), release); !errors.Is(err, ErrNoExec) {
		t.Errorf("EOF alone: %v, want ErrNoExec", err)
	}
	b.Reset()
	launch.WriteReport(&b, launch.Report{Stage: launch.StageReady})
	if _, err := ReadReports(&b, release); !errors.Is(err, ErrNoExec) {
		t.Errorf("ready then EOF: %v, want ErrNoExec", err)
	}
	b.Reset()
	launch.WriteReport(&b, launch.Report{Stage: "mounts", Error: "mount proc: EPERM"})
	if stage, err := ReadReports(&b, release); stage != "mounts" || err == nil || err.Error() != "mount proc: EPERM" {
		t.Errorf("error report: %q %v", stage, err)
	}
	b.Reset()
	launch.WriteReport(&b, launch.Report{Stage: launch.StageReady})
	launch.WriteReport(&b, launch.Report{Stage: launch.StageExec})
	launch.WriteReport(&b, launch.Report{Stage: launch.StageExec, Error: "exec /bin/x: ENOENT"})
	if _, err := ReadReports(&b, release); err == nil {
		t.Error("an exec failure after the exec report was taken for success")
	}
	// The workload may not run before its release: the CPU quota would not hold it.
	b.Reset()
	launch.WriteReport(&b, launch.Report{Stage: launch.StageExec})
	if _, err := ReadReports(&b, release); err == nil {
		t.Error("an exec report without a release was taken for success")
	}
	b.Reset()
	launch.WriteReport(&b, launch.Report{Stage: launch.StageReady})
	launch.WriteReport(&b, launch.Report{Stage: launch.StageReady})
	if _, err := ReadReports(&b, release); err == nil {
		t.Error("a second ready report was accepted")
	}
	b.Reset()
	launch.WriteReport(&b, launch.Report{Stage: launch.StageReady})
	launch.WriteReport(&b, launch.Report{Stage: launch.StageExec})
	fail := errors.New("cpu.max: EINVAL")
	if stage, err := ReadReports(&b, func() error { return fail }); stage != "release" || !errors.Is(err, fail) {
		t.Errorf("failed release: %q %v", stage, err)
	}
	if _, err := ReadReports(strings.NewReader("{garbage"), release); err == nil || errors.Is(err, ErrNoExec) {
		t.Errorf("garbage: %v", err)
	}
}

func TestDescribe(t *testing.T) {
	for ws, want := range map[unix.WaitStatus]string{
		0:                                   "exit status 0",
		3 << 8:                              "exit status 3",
		unix.WaitStatus(unix.SIGKILL):       "killed by signal SIGKILL",
		unix.WaitStatus(unix.SIGSYS) | 0x80: "killed by seccomp (SIGSYS)",
	} {
		if got := Describe(ws); got != want {
			t.Errorf("Describe(%#x) = %q, want %q", uint32(ws), got, want)
		}
	}
}

func TestCopyLines(t *testing.T) {
	long := strings.Repeat("x", MaxLogLine+10)
	in := "one\r\ntwo\x1b[2J\n" + long + "\nlast"
	var out bytes.Buffer
	if err := CopyLines(&out, strings.NewReader(in), "persona p: "); err != nil {
		t.Fatal(err)
	}
	want := "persona p: one\npersona p: two?[2J\npersona p: " + long[:MaxLogLine] + "\npersona p: xxxxxxxxxx\npersona p: last\n"
	if out.String() != want {
		t.Errorf("CopyLines:\n%q\nwant\n%q", out.String(), want)
	}
}

func TestCopyLinesBudget(t *testing.T) {
	clock := time.Unix(0, 0)
	var in strings.Builder
	line := strings.Repeat("y", 100) + "\n"
	for range 400 { // 400 lines of ~110 bytes: far over the 16 KiB burst
		in.WriteString(line)
	}
	var out bytes.Buffer
	if err := copyLines(&out, strings.NewReader(in.String()), "persona p: ", func() time.Time { return clock }); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\n"); n >= 400 || out.Len() > LogBurst {
		t.Errorf("%d lines, %d bytes went out with no time passing", n, out.Len())
	}
	// After a pause, lines flow again and the drop is reported.
	out.Reset()
	calls := 0
	now := func() time.Time {
		calls++
		if calls > 200 {
			return clock.Add(10 * time.Second)
		}
		return clock
	}
	if err := copyLines(&out, strings.NewReader(in.String()), "persona p: ", now); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "persona p: (") || !strings.Contains(out.String(), "lines dropped: over the console budget)\n") {
		t.Errorf("no drop report:\n%s", out.String()[max(0, out.Len()-400):])
	}
}

// TestRlimitNumbers: the policy's table of rlimit names matches the kernel's numbers.
func TestRlimitNumbers(t *testing.T) {
	want := map[string]int{"as": unix.RLIMIT_AS, "core": unix.RLIMIT_CORE, "cpu": unix.RLIMIT_CPU, "data": unix.RLIMIT_DATA,
		"fsize": unix.RLIMIT_FSIZE, "locks": unix.RLIMIT_LOCKS, "memlock": unix.RLIMIT_MEMLOCK, "msgqueue": unix.RLIMIT_MSGQUEUE,
		"nofile": unix.RLIMIT_NOFILE, "nproc": unix.RLIMIT_NPROC, "sigpending": unix.RLIMIT_SIGPENDING, "stack": unix.RLIMIT_STACK}
	if !reflect.DeepEqual(policy.Rlimits, want) {
		t.Errorf("policy.Rlimits = %v, want %v", policy.Rlimits, want)
	}
	for name, n := range map[string]int{"SIGTERM": int(unix.SIGTERM), "SIGINT": int(unix.SIGINT), "SIGQUIT": int(unix.SIGQUIT),
		"SIGHUP": int(unix.SIGHUP), "SIGUSR1": int(unix.SIGUSR1), "SIGWINCH": int(unix.SIGWINCH), "SIGPWR": int(unix.SIGPWR)} {
		if got, err := policy.ParseSignal(name); err != nil || got != n {
			t.Errorf("policy.ParseSignal(%s) = %d %v, want %d", name, got, err, n)
		}
	}
}
