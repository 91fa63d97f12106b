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
	if u := s.Config().Uplink; u == nil || !reflect.DeepEqual(*u, Uplink{Address: "10.0.2.15/24", Gateway: "10.0.2.2"}) {
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
	if s, err = NewSpec(p, 1, "/", "/persist", nil); err != nil || s.RunAs != (IDs{104, 110}) || *s.Config().User != s.RunAs {
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
func TestEnvironmentFiles(t *testing.T) {
	if got := HostsFile("web", &Uplink{Address: "10.0.2.15/24", Address6: "fd00::15/64"}); got !=
		"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.0.2.15\tweb\nfd00::15\tweb\n" {
		t.Errorf("hosts with an uplink:\n%s", got)
	}
	if got := HostsFile("job", nil); !strings.HasSuffix(got, "\n127.0.1.1\tjob\n") {
		t.Errorf("hosts without an uplink:\n%s", got)
	}
	if got := ResolvConf([]string{"10.0.2.3", "fd00::3"}); got != "nameserver 10.0.2.3\nnameserver fd00::3\n" {
		t.Errorf("resolv.conf:\n%s", got)
	}
	s, err := NewSpec(samplePolicy(), 0, "/", "/persist", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Rlimit{{unix.RLIMIT_CORE, 0}, {unix.RLIMIT_NOFILE, 65536}}; !reflect.DeepEqual(s.Rlimits, want) || s.ShmSize != 8<<20 {
		t.Errorf("rlimits %v, shm %d", s.Rlimits, s.ShmSize)
	}
}

func TestUplinkParse(t *testing.T) {
	a, err := Uplink{Address: "10.0.2.15/24", Gateway: "10.0.2.2", Address6: "fd00::15/64", Gateway6: "fe80::1",
		Siblings: []string{"10.0.2.16", "fd00::16"}}.Parse()
	if err != nil || a.Addr.String() != "10.0.2.15/24" || a.Gw.String() != "10.0.2.2" || a.Addr6.String() != "fd00::15/64" ||
		a.Gw6.String() != "fe80::1" || fmt.Sprint(a.Siblings) != "[10.0.2.16 fd00::16]" {
		t.Errorf("Parse: %+v %v", a, err)
	}
	if a, err := (Uplink{Address: "10.0.2.15/24"}).Parse(); err != nil || a.Gw.IsValid() || a.Addr6.IsValid() {
		t.Errorf("no gateway: %+v %v", a, err)
	}
	for _, u := range []Uplink{{}, {Address: "fd00::1/64"}, {Address: "10.0.2.15/24", Gateway: "10.0.9.2"},
		{Address: "10.0.2.15/24", Gateway: "x"}, {Address: "10.0.2.15/24", Address6: "10.0.2.16/24"},
		{Address: "10.0.2.15/24", Gateway6: "fe80::1"}, {Address: "10.0.2.15/24", Siblings: []string{"10.0.2.15"}},
		{Address: "10.0.2.15/24", Siblings: []string{"nobody"}}} {
		if _, err := u.Parse(); err == nil {
			t.Errorf("%+v accepted", u)
		}
	}
}

func TestUplinkSysctls(t *testing.T) {
	off := fmt.Sprint(UplinkSysctls(false))
	for _, want := range []string{"{net/ipv6/conf/eth0/disable_ipv6 1}", "{net/ipv4/conf/eth0/rp_filter 1}", "{net/ipv4/conf/all/rp_filter 1}", "{net/ipv4/conf/all/accept_redirects 0}"} {
		if !strings.Contains(off, want) {
			t.Errorf("without IPv6: %s lacks %s", off, want)
		}
	}
	on := fmt.Sprint(UplinkSysctls(true))
	if strings.Contains(on, "disable_ipv6") || !strings.Contains(on, "{net/ipv6/conf/eth0/accept_ra 0}") || !strings.Contains(on, "{net/ipv6/conf/eth0/addr_gen_mode 1}") {
		t.Errorf("with IPv6: %s", on)
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

func sampleConfig() Config {
	p := samplePolicy()
	p.Network, p.Address, p.Gateway = "uplink", "10.0.2.15/24", "10.0.2.2"
	s, _ := NewSpec(p, 0, "/", "/persist", []byte{1, 2, 3, 4, 5, 6, 7, 8})
	c := s.Config()
	c.Uplink.Device = "up42"
	c.User = &IDs{UID: 104, GID: 110}
	c.DNS = []string{"10.0.2.3"}
	return c
}

func TestConfigRoundTrip(t *testing.T) {
	c := sampleConfig()
	var b bytes.Buffer
	if err := c.Encode(&b); err != nil {
		t.Fatal(err)
	}
	got, err := DecodeConfig(&b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Errorf("round trip: %+v, want %+v", got, c)
	}
}

func TestDecodeConfigRejects(t *testing.T) {
	good := `{"version":1,"name":"web","tree":"/personas/web","exec":["/bin/web"],"tmp_size":1,"run_size":1,"shm_size":1,"seccomp":"AQIDBAUGBwg="}`
	if _, err := DecodeConfig(strings.NewReader(good)); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for name, bad := range map[string]string{
		"version":      strings.Replace(good, `"version":1`, `"version":2`, 1),
		"unknown key":  strings.Replace(good, `"name"`, `"extra":1,"name"`, 1),
		"trailing":     good + `{}`,
		"relative exe": strings.Replace(good, `"/bin/web"`, `"bin/web"`, 1),
		"dirty tree":   strings.Replace(good, `"/personas/web"`, `"/personas/../etc"`, 1),
		"name slash":   strings.Replace(good, `"web"`, `"a/b"`, 1),
		"no seccomp":   strings.Replace(good, `"AQIDBAUGBwg="`, `""`, 1),
		"zero tmp":     strings.Replace(good, `"tmp_size":1`, `"tmp_size":0`, 1),
		"nul in exec":  strings.Replace(good, `"/bin/web"`, `"/bin/web\u0000x"`, 1),
		"empty":        ``,
		"bad uplink":   strings.Replace(good, `"seccomp"`, `"uplink":{"address":"10.0.2.15","device":"up1"},"seccomp"`, 1),
		"no device":    strings.Replace(good, `"seccomp"`, `"uplink":{"address":"10.0.2.15/24"},"seccomp"`, 1),
		"zero shm":     strings.Replace(good, `"shm_size":1`, `"shm_size":0`, 1),
		"rlimit":       strings.Replace(good, `"seccomp"`, `"rlimits":[{"resource":16,"value":1}],"seccomp"`, 1),
		"dns":          strings.Replace(good, `"seccomp"`, `"dns":["ns.example"],"seccomp"`, 1),
		"user range":   strings.Replace(good, `"seccomp"`, `"user":{"uid":65536,"gid":0},"seccomp"`, 1),
	} {
		if _, err := DecodeConfig(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzDecodeConfig(f *testing.F) {
	var b bytes.Buffer
	sampleConfig().Encode(&b)
	f.Add(b.Bytes())
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeConfig(bytes.NewReader(data))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := c.Encode(&out); err != nil {
			t.Fatal(err)
		}
		again, err := DecodeConfig(&out)
		if err != nil || !reflect.DeepEqual(c, again) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, c, again)
		}
	})
}

func TestReadReports(t *testing.T) {
	released := 0
	release := func() error { released++; return nil }
	var b bytes.Buffer
	WriteReport(&b, Report{Stage: StageReady})
	WriteReport(&b, Report{Stage: StageExec})
	if _, err := ReadReports(&b, release); err != nil || released != 1 {
		t.Errorf("ready, exec then EOF: %v, released %d times", err, released)
	}
	if _, err := ReadReports(strings.NewReader(""), release); !errors.Is(err, ErrNoExec) {
		t.Errorf("EOF alone: %v, want ErrNoExec", err)
	}
	b.Reset()
	WriteReport(&b, Report{Stage: StageReady})
	if _, err := ReadReports(&b, release); !errors.Is(err, ErrNoExec) {
		t.Errorf("ready then EOF: %v, want ErrNoExec", err)
	}
	b.Reset()
	WriteReport(&b, Report{Stage: "mounts", Error: "mount proc: EPERM"})
	if stage, err := ReadReports(&b, release); stage != "mounts" || err == nil || err.Error() != "mount proc: EPERM" {
		t.Errorf("error report: %q %v", stage, err)
	}
	b.Reset()
	WriteReport(&b, Report{Stage: StageReady})
	WriteReport(&b, Report{Stage: StageExec})
	WriteReport(&b, Report{Stage: StageExec, Error: "exec /bin/x: ENOENT"})
	if _, err := ReadReports(&b, release); err == nil {
		t.Error("an exec failure after the exec report was taken for success")
	}
	// The workload may not run before its release: the CPU quota would not hold it.
	b.Reset()
	WriteReport(&b, Report{Stage: StageExec})
	if _, err := ReadReports(&b, release); err == nil {
		t.Error("an exec report without a release was taken for success")
	}
	b.Reset()
	WriteReport(&b, Report{Stage: StageReady})
	WriteReport(&b, Report{Stage: StageReady})
	if _, err := ReadReports(&b, release); err == nil {
		t.Error("a second ready report was accepted")
	}
	b.Reset()
	WriteReport(&b, Report{Stage: StageReady})
	WriteReport(&b, Report{Stage: StageExec})
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
