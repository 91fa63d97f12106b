package policy

import (
	"bytes"
	"errors"
	"github.com/pelletier/go-toml/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

const minimal = `
[[persona]]
name = "web"
exec = ["/bin/web"]
cpus = 0.5
memory = "64MiB"
pids = 32
`

// uplink gives the minimal persona an uplink.
const uplink = "network = \"uplink\"\naddress = \"10.0.2.15/24\"\ngateway = \"10.0.2.2\"\n"

func parse(t *testing.T, s string) Policy {
	t.Helper()
	p, err := parseTOML(s)
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, s)
	}
	return p
}

// parseTOML reads a policy as the operator writes it (the build configuration's tables) and
// validates it as the build does.
func parseTOML(doc string) (Policy, error) {
	dec := toml.NewDecoder(strings.NewReader(doc))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return Policy{}, err
	}
	return p, p.Validate()
}

func TestParseDefaults(t *testing.T) {
	p := parse(t, minimal)
	g := p.Governor
	if g.PassphraseAttempts != DefaultPassphraseAttempts || time.Duration(g.WatchdogTimeout) != DefaultWatchdogTimeout || time.Duration(g.HealthWindow) != DefaultHealthWindow {
		t.Errorf("governor defaults not filled in: %+v", g)
	}
	if len(p.Personas) != 1 {
		t.Fatalf("got %d personas, want 1", len(p.Personas))
	}
	q := p.Personas[0]
	want := Persona{Name: "web", Exec: []string{"/bin/web"}, CPUs: 0.5, Memory: 64 << 20, Pids: 32,
		TmpSize: DefaultTmpSize, RunSize: DefaultRunSize, Network: "none", Restart: "always",
		MemoryStall: Duration(DefaultMemoryStall), StopSignal: "SIGTERM", StopTimeout: Duration(DefaultStopTimeout),
		ShmSize: DefaultShmSize, Rlimits: map[string]uint64{"nofile": DefaultNofile}}
	if !reflect.DeepEqual(q, want) {
		t.Errorf("persona = %+v\nwant      %+v", q, want)
	}
	if q.Tree() != "personas/web" {
		t.Errorf("Tree() = %q", q.Tree())
	}
}

func TestParseOrder(t *testing.T) {
	p := parse(t, `
[[persona]]
name = "zeta"
exec = ["/z"]
cpus = 1
memory = "4MiB"
pids = 1
[[persona]]
name = "beta"
exec = ["/b"]
cpus = 1
memory = "4MiB"
pids = 1
order = 2
[[persona]]
name = "alpha"
exec = ["/a"]
cpus = 1
memory = "4MiB"
pids = 1
`)
	var got []string
	for _, q := range p.Personas {
		got = append(got, q.Name)
	}
	if want := []string{"alpha", "zeta", "beta"}; !reflect.DeepEqual(got, want) {
		t.Errorf("order = %v, want %v (by order, then name)", got, want)
	}
}

func TestParseRefuses(t *testing.T) {
	repl := func(old, new string) string {
		if !strings.Contains(minimal, old) {
			t.Fatalf("minimal policy has no %q", old)
		}
		return strings.Replace(minimal, old, new, 1)
	}
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"no cpus", repl("cpus = 0.5\n", ""), "cpus is mandatory"},
		{"no memory", repl("memory = \"64MiB\"\n", ""), "memory is mandatory"},
		{"no pids", repl("pids = 32\n", ""), "pids is mandatory"},
		{"zero cpus", repl("cpus = 0.5", "cpus = 0"), "cpus"},
		{"tiny cpus", repl("cpus = 0.5", "cpus = 0.001"), "cpus"},
		{"nan cpus", repl("cpus = 0.5", "cpus = nan"), "cpus"},
		{"inf cpus", repl("cpus = 0.5", "cpus = inf"), "cpus"},
		{"too many cpus", repl("cpus = 0.5", "cpus = 65"), "cpus"},
		{"small memory", repl(`"64MiB"`, `"1MiB"`), "memory"},
		{"too many pids", repl("pids = 32", "pids = 5000"), "pids"},
		{"bad size", repl(`"64MiB"`, `"64 parsecs"`), "size"},
		{"bad name", repl(`"web"`, `"Web"`), "name"},
		{"relative exec", repl(`"/bin/web"`, `"bin/web"`), "exec"},
		{"no exec", repl(`exec = ["/bin/web"]`, ""), "exec"},
		{"bad env", minimal + "env = [\"NOEQUALS\"]\n", "env"},
		{"data_exec without data", minimal + "data_exec = true\n", "data_exec"},
		{"network", minimal + "network = \"bridge\"\n", "network"},
		{"restart", minimal + "restart = \"sometimes\"\n", "restart"},
		{"uplink without address", minimal + "network = \"uplink\"\n", "needs an address"},
		{"address without uplink", minimal + "address = \"10.0.2.15/24\"\n", "need network"},
		{"gateway without uplink", minimal + "gateway = \"10.0.2.2\"\n", "need network"},
		{"address without prefix", minimal + "network = \"uplink\"\naddress = \"10.0.2.15\"\n", "prefix length"},
		{"address not ip", minimal + "network = \"uplink\"\naddress = \"web/24\"\n", "prefix length"},
		{"ipv6 address", minimal + "network = \"uplink\"\naddress = \"fd00::1/64\"\n", "IPv4"},
		{"network address", minimal + "network = \"uplink\"\naddress = \"10.0.2.0/24\"\n", "host's address"},
		{"zero prefix", minimal + "network = \"uplink\"\naddress = \"10.0.2.15/0\"\n", "prefix length"},
		{"gateway outside", minimal + "network = \"uplink\"\naddress = \"10.0.2.15/24\"\ngateway = \"10.0.3.2\"\n", "not another host"},
		{"gateway is self", minimal + "network = \"uplink\"\naddress = \"10.0.2.15/24\"\ngateway = \"10.0.2.15\"\n", "not another host"},
		{"gateway not ip", minimal + "network = \"uplink\"\naddress = \"10.0.2.15/24\"\ngateway = \"router\"\n", "not an IPv4"},
		{"twice", minimal + minimal, "twice"},
		{"address6 without uplink", minimal + "address6 = \"fd00::15/64\"\n", "need network"},
		{"address6 is ipv4", minimal + "network = \"uplink\"\naddress = \"10.0.2.15/24\"\naddress6 = \"10.0.2.16/24\"\n", "address6"},
		{"address6 link-local", minimal + "network = \"uplink\"\naddress = \"10.0.2.15/24\"\naddress6 = \"fe80::15/64\"\n", "host's address"},
		{"gateway6 alone", minimal + "network = \"uplink\"\naddress = \"10.0.2.15/24\"\ngateway6 = \"fd00::2\"\n", "needs address6"},
		{"gateway6 outside", minimal + "network = \"uplink\"\naddress = \"10.0.2.15/24\"\naddress6 = \"fd00::15/64\"\ngateway6 = \"fd01::2\"\n", "neither"},
		{"shared address", minimal + "network = \"uplink\"\naddress = \"10.0.2.15/24\"\n" +
			strings.Replace(minimal, `"web"`, `"api"`, 1) + "network = \"uplink\"\naddress = \"10.0.2.15/16\"\n", "both have the uplink address 10.0.2.15"},
		{"protocol", minimal + "protocols = [\"dccp\"]\n", "protocols"},
		{"memory stall", minimal + "memory_stall = \"100ms\"\n", "memory_stall"},
		{"user form", minimal + "user = \"Post gres\"\n", `user "Post gres" is not NAME, UID, NAME:GROUP or UID:GID`},
		{"user range", minimal + "user = \"70000\"\n", "id 70000 is above 65535"},
		{"group range", minimal + "user = \"1:65536\"\n", "id 65536 is above 65535"},
		{"shm size", minimal + "shm_size = \"1GiB\"\n", "shm_size 1073741824 is outside 64KiB..memory"},
		{"rlimit name", minimal + "rlimits = { rtprio = 99 }\n", `rlimits: "rtprio" is not one of as, core, cpu`},
		{"rlimit nofile", minimal + "rlimits = { nofile = 2000000 }\n", "nofile 2000000 is outside 64..1048576"},
		{"rlimit value", minimal + "rlimits = { core = -1 }\n", "negative"},
		{"dns without uplink", minimal + "dns = [\"10.0.2.3\"]\n", `dns needs network = "uplink"`},
		{"courier without uplink", minimal + "courier = true\n", `courier needs network = "uplink"`},
		{"dns not ip", minimal + uplink + "dns = [\"ns1.example\"]\n", `dns server "ns1.example" is not an IP address`},
		{"dns too many", minimal + uplink + "dns = [\"1.1.1.1\", \"8.8.8.8\", \"9.9.9.9\", \"::1\"]\n", "dns lists 4 servers"},
		{"stop signal", minimal + "stop_signal = \"SIGRTMIN+3\"\n", "stop_signal: signal \"SIGRTMIN+3\""},
		{"stop signal kill", minimal + "stop_signal = \"KILL\"\n", "stop_signal"},
		{"stop signal number", minimal + "stop_signal = \"19\"\n", "stop_signal"},
		{"stop timeout", minimal + "stop_timeout = \"10m\"\n", "stop_timeout 10m0s is outside 100ms..2m0s"},
		{"passphrase attempts", "[governor]\npassphrase_attempts = 11\n" + minimal, "passphrase_attempts"},
		{"watchdog", "[governor]\nwatchdog_timeout = \"100ms\"\n" + minimal, "watchdog_timeout"},
		{"health window", "[governor]\nhealth_window = \"2h\"\n" + minimal, "health_window"},
		{"bad duration", "[governor]\nhealth_window = \"soon\"\n" + minimal, "soon"},
		{"wrong type", repl("pids = 32", `pids = "32"`), "Pids"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseTOML(tc.doc)
			if err == nil {
				t.Fatalf("Parse accepted:\n%s", tc.doc)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// TestStopSignal: a stop signal is written the way OCI images and operators write it and is
// baked under its one canonical name.
func TestStopSignal(t *testing.T) {
	for in, want := range map[string]string{"SIGTERM": "SIGTERM", "int": "SIGINT", "SigQuit": "SIGQUIT", "2": "SIGINT", "SIGWINCH": "SIGWINCH"} {
		p := parse(t, minimal+"stop_signal = \""+in+"\"\nstop_timeout = \"90s\"\n")
		if q := p.Personas[0]; q.StopSignal != want || time.Duration(q.StopTimeout) != 90*time.Second {
			t.Errorf("stop_signal %q: got %q, %s", in, q.StopSignal, time.Duration(q.StopTimeout))
		}
	}
	if n := parse(t, minimal).Personas[0].Signal(); n != 15 {
		t.Errorf("default stop signal %d, want 15", n)
	}
}

// TestUser: the forms an operator writes are accepted; bay0 takes only the numbers spine
// build bakes.
func TestUser(t *testing.T) {
	for _, tc := range []struct {
		user     string
		uid, gid uint32
		name     bool
	}{
		{"", 0, 0, false}, {"postgres", 0, 0, true}, {"104", 104, 104, false}, {"104:110", 104, 110, false},
		{"postgres:ssl-cert", 0, 0, true}, {"0:postgres", 0, 0, true}, {"www-data", 0, 0, true}, {"65535:0", 65535, 0, false},
	} {
		q := parse(t, minimal+"user = \""+tc.user+"\"\n").Personas[0]
		uid, gid, err := q.IDs()
		if tc.name != errors.Is(err, ErrUserName) || !tc.name && (err != nil || uid != tc.uid || gid != tc.gid) {
			t.Errorf("user %q: IDs %d:%d %v", tc.user, uid, gid, err)
		}
	}
}

// TestPersonaEnvironment: /dev/shm, rlimits and dns as written, with their defaults.
func TestPersonaEnvironment(t *testing.T) {
	q := parse(t, minimal+uplink+"shm_size = \"8MiB\"\nrlimits = { core = 0, stack = 16777216 }\ndns = [\"10.0.2.3\"]\n").Personas[0]
	if q.ShmSize != 8<<20 || !reflect.DeepEqual(q.Rlimits, map[string]uint64{"core": 0, "stack": 16 << 20, "nofile": DefaultNofile}) ||
		!reflect.DeepEqual(q.DNS, []string{"10.0.2.3"}) {
		t.Errorf("persona %+v", q)
	}
	small := parse(t, strings.Replace(minimal, `"64MiB"`, `"16MiB"`, 1)+"rlimits = { nofile = 1024 }\n").Personas[0]
	if small.ShmSize != 16<<20 || small.Rlimits["nofile"] != 1024 {
		t.Errorf("shm_size defaults to memory when memory is below 64MiB, nofile as set: %+v", small)
	}
}

func TestCPUMax(t *testing.T) {
	for _, tc := range []struct {
		cpus float64
		want string
	}{
		{0.01, "1000 100000"},
		{0.1, "10000 100000"},
		{0.5, "50000 100000"},
		{1, "100000 100000"},
		{1.5, "150000 100000"},
		{0.333333, "33333 100000"},
		{0.123456, "12346 100000"},
		{64, "6400000 100000"},
	} {
		if got := (Persona{CPUs: tc.cpus}).CPUMax(); got != tc.want {
			t.Errorf("CPUMax(%v) = %q, want %q", tc.cpus, got, tc.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
		ok   bool
	}{
		{"0", 0, true},
		{"4096", 4096, true},
		{"512K", 512 << 10, true},
		{"512k", 512 << 10, true},
		{"512KiB", 512 << 10, true},
		{"64M", 64 << 20, true},
		{"64m", 64 << 20, true},
		{"64MiB", 64 << 20, true},
		{"1G", 1 << 30, true},
		{"1g", 1 << 30, true},
		{"2GiB", 2 << 30, true},
		{" 8MiB ", 8 << 20, true},
		{"8 MiB", 8 << 20, true},
		{"1048576G", 1 << 50, true},
		{"1048577G", 0, false},
		{"", 0, false},
		{"MiB", 0, false},
		{"-1", 0, false},
		{"-1MiB", 0, false},
		{"1.5GiB", 0, false},
		{"1TiB", 0, false},
		{"1B", 0, false},
		{"1MB", 0, false},
		{"1GiBG", 0, false},
		{"0x10", 0, false},
		{"99999999999999999999", 0, false},
	} {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestSizeMarshalText(t *testing.T) {
	for _, tc := range []struct {
		in   Size
		want string
	}{
		{0, "0"},
		{1000, "1000"},
		{1024, "1KiB"},
		{1536, "1536"},
		{3 << 20, "3MiB"},
		{1 << 30, "1GiB"},
		{(1 << 30) + (1 << 20), "1025MiB"},
	} {
		b, err := tc.in.MarshalText()
		if err != nil || string(b) != tc.want {
			t.Errorf("Size(%d).MarshalText() = %q, %v; want %q", tc.in, b, err, tc.want)
			continue
		}
		back, err := ParseSize(string(b))
		if err != nil || back != tc.in {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", b, back, err, tc.in)
		}
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	p := parse(t, `
[governor]
passphrase_attempts = 5
watchdog_timeout = "30s"
health_window = "1m30s"

[[persona]]
name = "web"
exec = ["/bin/web", ":8080"]
env = ["A=1", "B=two words"]
workdir = "/srv"
cpus = 0.25
memory = "96MiB"
pids = 64
tmp_size = "8MiB"
run_size = "512KiB"
data = true
data_exec = true
network = "uplink"
address = "10.0.2.15/24"
gateway = "10.0.2.2"
restart = "never"
order = 3
syscalls = ["ptrace"]

[[persona]]
name = "heartbeat"
exec = ["/bin/heartbeat"]
cpus = 0.1
memory = "16MiB"
pids = 8
`)
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	q, err := Parse(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("Parse(Marshal()): %v\n%s", err, b)
	}
	if !reflect.DeepEqual(p, q) {
		t.Errorf("round trip changed the policy:\n%+v\n%+v\n%s", p, q, b)
	}
	b2, err := q.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != string(b2) {
		t.Errorf("Marshal is not stable:\n%s\n---\n%s", b, b2)
	}
	if time.Duration(q.Governor.HealthWindow) != 90*time.Second {
		t.Errorf("health_window = %v", time.Duration(q.Governor.HealthWindow))
	}
}

func TestUplink(t *testing.T) {
	p, err := parseTOML(minimal + "network = \"uplink\"\naddress = \"10.0.2.15/24\"\ngateway = \"10.0.2.2\"\n")
	if err != nil {
		t.Fatal(err)
	}
	addr, gw := p.Personas[0].Uplink()
	if addr.String() != "10.0.2.15/24" || gw.String() != "10.0.2.2" {
		t.Errorf("uplink %v via %v", addr, gw)
	}
	p, err = parseTOML(minimal + "network = \"uplink\"\naddress = \"192.168.7.9/30\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if addr, gw := p.Personas[0].Uplink(); addr.String() != "192.168.7.9/30" || gw.IsValid() {
		t.Errorf("uplink %v via %v, want no gateway", addr, gw)
	}
	p, err = parseTOML(minimal)
	if err != nil {
		t.Fatal(err)
	}
	if addr, _ := p.Personas[0].Uplink(); addr.IsValid() {
		t.Errorf("network none has uplink %v", addr)
	}
}

// TestBakedJSONIsStrict: the baked form refuses what the TOML form refuses, and anything else
// than one JSON object.
func TestBakedJSONIsStrict(t *testing.T) {
	good, err := parse(t, minimal).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(bytes.NewReader(good)); err != nil {
		t.Fatalf("Parse(Marshal()) = %v\n%s", err, good)
	}
	for name, doc := range map[string]string{
		"unknown field": strings.Replace(string(good), `"name"`, `"memroy": 1, "name"`, 1),
		"trailing data": string(good) + "{}",
		"not JSON":      minimal,
		"no limits":     `{"persona":[{"name":"web","exec":["/bin/web"]}]}`,
		"wrong type":    strings.Replace(string(good), `"pids": 32`, `"pids": "32"`, 1),
		"too large":     strings.Repeat(" ", MaxSize+1) + string(good),
	} {
		if _, err := Parse(strings.NewReader(doc)); err == nil {
			t.Errorf("%s: Parse accepted\n%.200s", name, doc)
		}
	}
}

// TestTagsAgree: every field has the same name in the TOML the operator writes and the JSON
// bay0 reads, so a field added to one is never silently missing from the other.
func TestTagsAgree(t *testing.T) {
	for _, typ := range []reflect.Type{reflect.TypeOf(Policy{}), reflect.TypeOf(Governor{}), reflect.TypeOf(Persona{})} {
		for f := range typ.Fields() {
			if tt, jt := f.Tag.Get("toml"), f.Tag.Get("json"); tt == "" || tt != jt {
				t.Errorf("%s.%s: toml tag %q, json tag %q", typ.Name(), f.Name, tt, jt)
			}
		}
	}
}

// FuzzParse: the baked policy crosses into PID 1. Parse never panics, and whatever it accepts
// survives a round trip unchanged.
func FuzzParse(f *testing.F) {
	p, err := parseTOML(minimal)
	if err != nil {
		f.Fatal(err)
	}
	b, _ := p.Marshal()
	f.Add(b)
	f.Add([]byte(`{"governor":{"watchdog_timeout":"1s"},"persona":[]}`))
	full, err := parseTOML(minimal + uplink + "user = \"104:110\"\nstop_signal = \"INT\"\nstop_timeout = \"30s\"\n" +
		"shm_size = \"8MiB\"\nrlimits = { nofile = 1024, core = 0 }\ndns = [\"10.0.2.3\", \"fd00::3\"]\n" +
		"log_persist = true\nlog_size = \"2MiB\"\ncourier = true\n[persona.health]\nhttp = \"/up\"\nhttp_port = 8000\nretries = 5\n")
	if err != nil {
		f.Fatal(err)
	}
	b, _ = full.Marshal()
	f.Add(b)
	execCheck, err := parseTOML(minimal + "[persona.health]\nexec = [\"/usr/bin/redis-cli\", \"ping\"]\ntimeout = \"2s\"\n")
	if err != nil {
		f.Fatal(err)
	}
	b, _ = execCheck.Marshal()
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(bytes.NewReader(data))
		if err != nil {
			return
		}
		b, err := p.Marshal()
		if err != nil {
			t.Fatalf("Marshal of an accepted policy: %v", err)
		}
		q, err := Parse(bytes.NewReader(b))
		if err != nil || !reflect.DeepEqual(p, q) {
			t.Errorf("round trip: %v\n%+v\n%+v", err, p, q)
		}
	})
}

// TestVet: spine build refuses a misspelt system call with the nearest names, and a call below
// the floor naming the persona and the call; Parse (bay0's side) accepts both.
func TestVet(t *testing.T) {
	for _, tc := range []struct{ call, want string }{
		{"epoll_create2", `persona "web": syscalls: "epoll_create2": unknown system call (did you mean epoll_create, epoll_create1`},
		{"unshare", `persona "web": syscalls: "unshare" enters or makes namespaces`},
		{"io_uring_enter", `persona "web": syscalls: "io_uring_enter" bypasses`},
	} {
		p := parse(t, minimal+"syscalls = [\"accept4\", \""+tc.call+"\"]\n")
		err := p.Vet()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Vet = %v, want %q", tc.call, err, tc.want)
		}
	}
	if err := parse(t, minimal+"syscalls = [\"sethostname\"]\nprotocols = [\"sctp\"]\n").Vet(); err != nil {
		t.Errorf("Vet refused a known call above the floor: %v", err)
	}
}

// TestLogsAndHealth: log_persist takes a bounded log_size (default 1MiB); a health check is
// exactly one of a TCP port, an HTTP path on a port, or a bounded argv naming an absolute path,
// with its timing filled in and bounded.
func TestLogsAndHealth(t *testing.T) {
	p := parse(t, minimal+"log_persist = true\n[persona.health]\ntcp = 6379\n")
	q := p.Personas[0]
	if q.LogSize != DefaultLogSize || q.Health == nil || q.Health.Port() != 6379 ||
		time.Duration(q.Health.Interval) != DefaultHealthInterval || q.Health.Retries != DefaultHealthRetries ||
		time.Duration(q.Health.StartPeriod) != DefaultHealthStartPeriod || time.Duration(q.Health.Timeout) != DefaultHealthTimeout {
		t.Errorf("defaults: log_size %d, health %+v", q.LogSize, q.Health)
	}
	p = parse(t, minimal+"log_persist = true\nlog_size = \"64KiB\"\n[persona.health]\nhttp = \"/healthz?full=1\"\nhttp_port = 8000\ninterval = \"500ms\"\nretries = 1\nstart_period = \"0s\"\n")
	if h := p.Personas[0].Health; h.Port() != 8000 || h.HTTP != "/healthz?full=1" || time.Duration(h.Timeout) != 500*time.Millisecond {
		t.Errorf("http check: %+v", h)
	}
	if h := parse(t, minimal+"[persona.health]\nexec = [\"/usr/bin/redis-cli\", \"ping\"]\n").Personas[0].Health; len(h.Exec) != 2 || h.Port() != 0 ||
		time.Duration(h.Timeout) != DefaultHealthTimeout || h.Retries != DefaultHealthRetries {
		t.Errorf("exec check: %+v", h)
	}
	if p.Personas[0].Health.StartPeriod != Duration(DefaultHealthStartPeriod) {
		// "0s" is the zero value: it means the default, as every duration of the policy does.
		t.Errorf("start_period 0s = %s", time.Duration(p.Personas[0].Health.StartPeriod))
	}
	for extra, want := range map[string]string{
		"log_size = \"1MiB\"\n":                                                             "log_size needs log_persist",
		"log_persist = true\nlog_size = \"1KiB\"\n":                                         "log_size 1024 is outside",
		"log_persist = true\nlog_size = \"1GiB\"\n":                                         "log_size 1073741824 is outside",
		"[persona.health]\n":                                                                "health: needs tcp",
		"[persona.health]\ntcp = 1\nhttp = \"/\"\n":                                         "exclude each other",
		"[persona.health]\ntcp = 1\nexec = [\"/bin/true\"]\n":                               "exclude each other",
		"[persona.health]\nhttp = \"/\"\nhttp_port = 80\nexec = [\"/bin/true\"]\n":          "exclude each other",
		"[persona.health]\nexec = []\n":                                                     "exec must name an absolute path",
		"[persona.health]\nexec = [\"true\"]\n":                                             "exec must name an absolute path",
		"[persona.health]\nexec = [\"/bin/true\"]\nhttp_port = 80\n":                        "http_port needs http",
		"[persona.health]\nexec = [\"/bin/a\\u0000b\"]\n":                                   "NUL byte",
		"[persona.health]\nexec = [\"/bin/true\", \"" + strings.Repeat("x", 5000) + "\"]\n": "at most 4096",
		"[persona.health]\nexec = [\"/bin/true\"" + strings.Repeat(", \"x\"", 64) + "]\n":   "at most 64",
		"[persona.health]\ntcp = 70000\n":                                                   "outside 1..65535",
		"[persona.health]\ntcp = 80\nhttp_port = 80\n":                                      "http_port needs http",
		"[persona.health]\nhttp = \"/\"\n":                                                  "http_port 0 is outside",
		"[persona.health]\nhttp = \"/a b\"\nhttp_port = 80\n":                               "not an absolute path",
		"[persona.health]\nhttp = \"x\"\nhttp_port = 80\n":                                  "not an absolute path",
		"[persona.health]\ntcp = 80\ninterval = \"10ms\"\n":                                 "interval 10ms is outside",
		"[persona.health]\ntcp = 80\ntimeout = \"5s\"\n":                                    "timeout 5s is outside",
		"[persona.health]\ntcp = 80\nretries = 101\n":                                       "retries 101 is outside",
		"[persona.health]\ntcp = 80\nstart_period = \"2h\"\n":                               "start_period 2h0m0s is outside",
		"[persona.health]\ntcp = 80\ncmd = [\"/bin/true\"]\n":                               "missing in the target struct",
	} {
		if _, err := parseTOML(minimal + extra); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", extra, err, want)
		}
	}
}

func TestOneCourier(t *testing.T) {
	one := minimal + uplink + "courier = true\n"
	if q := parse(t, one).Personas[0]; !q.Courier {
		t.Fatal("courier = true was lost")
	}
	two := one + strings.Replace(strings.Replace(minimal+uplink+"courier = true\n", `name = "web"`, `name = "web2"`, 1), "10.0.2.15", "10.0.2.16", 1)
	if _, err := parseTOML(two); err == nil || !strings.Contains(err.Error(), "both the courier") {
		t.Fatalf("two couriers: %v", err)
	}
}
