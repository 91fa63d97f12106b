package persona

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/bay0/launch"
)

func sampleCheck(t *testing.T) launch.CheckConfig {
	t.Helper()
	p := samplePolicy()
	p.User = "999:998"
	s, err := NewSpec(p, 2, "/", "/persist", []byte{1, 2, 3, 4, 5, 6, 7, 8})
	if err != nil {
		t.Fatal(err)
	}
	s.RunAs = launch.IDs{UID: 999, GID: 998}
	return s.CheckConfig([]string{"/usr/bin/redis-cli", "ping"})
}

// TestCheckConfig: a check runs the workload's environment, limits and filter as the HOST ids
// of the workload's user, and its config survives the pipe to persona-check unchanged.
func TestCheckConfig(t *testing.T) {
	c := sampleCheck(t)
	base := IDRange(2)
	if c.UID != base+999 || c.GID != base+998 || c.Name != "web" || strings.Join(c.Env, ",") != "A=1" ||
		len(c.Rlimits) != 2 || len(c.Seccomp) != 8 || c.Version != launch.CheckConfigVersion {
		t.Errorf("check config: %+v", c)
	}
	var b bytes.Buffer
	if err := c.Encode(&b); err != nil {
		t.Fatal(err)
	}
	got, err := launch.DecodeCheckConfig(&b)
	if err != nil || !reflect.DeepEqual(got, c) {
		t.Errorf("round trip: %v\n%+v\n%+v", err, got, c)
	}
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
