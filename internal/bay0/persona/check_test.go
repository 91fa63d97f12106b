package persona

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func sampleCheck(t *testing.T) CheckConfig {
	t.Helper()
	p := samplePolicy()
	p.User = "999:998"
	s, err := NewSpec(p, 2, "/", "/persist", []byte{1, 2, 3, 4, 5, 6, 7, 8})
	if err != nil {
		t.Fatal(err)
	}
	s.RunAs = IDs{UID: 999, GID: 998}
	return s.CheckConfig([]string{"/usr/bin/redis-cli", "ping"})
}

// TestCheckConfig: a check runs the workload's environment, limits and filter as the HOST ids
// of the workload's user, and its config survives the pipe to persona-check unchanged.
func TestCheckConfig(t *testing.T) {
	c := sampleCheck(t)
	base := IDRange(2)
	if c.UID != base+999 || c.GID != base+998 || c.Name != "web" || strings.Join(c.Env, ",") != "A=1" ||
		len(c.Rlimits) != 2 || len(c.Seccomp) != 8 || c.Version != CheckConfigVersion {
		t.Errorf("check config: %+v", c)
	}
	var b bytes.Buffer
	if err := c.Encode(&b); err != nil {
		t.Fatal(err)
	}
	got, err := DecodeCheckConfig(&b)
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Errorf("round trip: %v\n%+v\n%+v", err, got, c)
	}
}

// TestDecodeCheckConfigRejects: persona-check refuses a config that would run the check as a
// machine id (root among them), without a filter, or not as the governor writes it.
func TestDecodeCheckConfigRejects(t *testing.T) {
	for name, edit := range map[string]func(*CheckConfig){
		"root":         func(c *CheckConfig) { c.UID, c.GID = 0, 0 },
		"machine gid":  func(c *CheckConfig) { c.GID = IDBase - 1 },
		"no filter":    func(c *CheckConfig) { c.Seccomp = nil },
		"relative":     func(c *CheckConfig) { c.Exec = []string{"redis-cli"} },
		"no exec":      func(c *CheckConfig) { c.Exec = nil },
		"workdir":      func(c *CheckConfig) { c.Workdir = "data" },
		"version":      func(c *CheckConfig) { c.Version = 2 },
		"name":         func(c *CheckConfig) { c.Name = "../x" },
		"nul":          func(c *CheckConfig) { c.Env = []string{"A=\x00"} },
		"bad resource": func(c *CheckConfig) { c.Rlimits = []Rlimit{{Resource: 99}} },
	} {
		c := sampleCheck(t)
		edit(&c)
		var b bytes.Buffer
		if err := c.Encode(&b); err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeCheckConfig(&b); err == nil {
			t.Errorf("%s: accepted %+v", name, c)
		}
	}
	for _, raw := range []string{`{"version":1}`, `{"version":1,"unknown":1}`, `{}{}`, strings.Repeat(" ", maxCheckConfig+1)} {
		if _, err := DecodeCheckConfig(strings.NewReader(raw)); err == nil {
			t.Errorf("accepted %.40q", raw)
		}
	}
}

func FuzzDecodeCheckConfig(f *testing.F) {
	var b bytes.Buffer
	c := CheckConfig{Version: CheckConfigVersion, Name: "web", Exec: []string{"/bin/true"}, UID: IDBase, GID: IDBase,
		Rlimits: []Rlimit{{Resource: 7, Value: 1024}}, Seccomp: []byte{1, 2, 3, 4, 5, 6, 7, 8}}
	_ = c.Encode(&b)
	f.Add(b.Bytes())
	f.Add([]byte(`{"version":1,"exec":[],"env":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCheckConfig(bytes.NewReader(data))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := c.Encode(&out); err != nil {
			t.Fatal(err)
		}
		again, err := DecodeCheckConfig(&out)
		if err != nil || !reflect.DeepEqual(c, again) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, c, again)
		}
	})
}

// TestTail: a check's output is kept as its last bytes only, shown on one printable line.
func TestTail(t *testing.T) {
	tl := NewTail(8)
	tl.Write([]byte("hello\n"))
	tl.Write([]byte("world\n"))
	if got := tl.String(); got != "o world" {
		t.Errorf("tail %q", got)
	}
	tl.Write([]byte(strings.Repeat("x", 100) + "é\x1b[31m"))
	if len(tl.buf) != 8 || strings.ContainsRune(tl.String(), 0x1b) {
		t.Errorf("tail %q (%d bytes kept)", tl.String(), len(tl.buf))
	}
	cut := NewTail(3)
	cut.Write([]byte("aé€"))
	if got := cut.String(); got != "€" {
		t.Errorf("a rune cut at the start: %q", got)
	}
}
