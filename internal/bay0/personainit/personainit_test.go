package personainit

import (
	"reflect"
	"testing"
)

func TestParseArgs(t *testing.T) {
	if fd, err := parseArgs([]string{"--config-fd=3"}); err != nil || fd != 3 {
		t.Errorf("parseArgs: %d %v", fd, err)
	}
	for _, bad := range [][]string{nil, {"--config-fd=2"}, {"--config-fd=x"}, {"--config-fd=3", "extra"}, {"-c=3"}} {
		if _, err := parseArgs(bad); err == nil {
			t.Errorf("parseArgs(%q) accepted", bad)
		}
	}
}

func TestEnviron(t *testing.T) {
	got := Environ([]string{"A=1", "HOME=/data"})
	want := []string{"A=1", "HOME=/data", "PATH=/usr/local/bin:/usr/bin:/bin"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Environ = %q, want %q", got, want)
	}
}

func TestInitialUIDMap(t *testing.T) {
	if !InitialUIDMap("         0          0 4294967295\n") {
		t.Error("the initial map was not recognised")
	}
	for _, m := range []string{"0 100000 65536", "0 0 1", "", "0 0 4294967295\n1 1 1"} {
		if InitialUIDMap(m) {
			t.Errorf("%q taken for the initial map", m)
		}
	}
}

func TestMountOptions(t *testing.T) {
	if got := tmpfsData(16<<20, 0o1777); got != "size=16777216,mode=1777" {
		t.Errorf("tmpfsData = %q", got)
	}
	for _, n := range []string{"proc", "dev", "tmp", "run", "sys"} {
		if !reserved(n, false) {
			t.Errorf("%s is not reserved", n)
		}
	}
	if reserved("data", false) || !reserved("data", true) || reserved("bin", true) {
		t.Error("data is reserved only when the persona has /data")
	}
}
