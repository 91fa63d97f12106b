package launch

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func sampleCheck() CheckConfig {
	return CheckConfig{Version: CheckConfigVersion, Name: "web", Exec: []string{"/usr/bin/redis-cli", "ping"}, Env: []string{"A=1"},
		UID: IDBase + 999, GID: IDBase + 998, Rlimits: []Rlimit{{Resource: 7, Value: 1024}}, Seccomp: []byte{1, 2, 3, 4, 5, 6, 7, 8}}
}

func TestCheckConfigRoundTrip(t *testing.T) {
	c := sampleCheck()
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
		c := sampleCheck()
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
