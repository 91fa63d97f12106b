package cli

import (
	"testing"

	"alpinespine.org/spine/internal/host/vm"
)

func TestParseForward(t *testing.T) {
	for in, want := range map[string]vm.Forward{
		"8080:8080":         {HostPort: 8080, GuestPort: 8080},
		"2222:10.0.2.16:22": {HostPort: 2222, GuestPort: 22, GuestAddr: "10.0.2.16"},
		"65535:10.0.2.15:1": {HostPort: 65535, GuestPort: 1, GuestAddr: "10.0.2.15"},
	} {
		got, err := ParseForward(in)
		if err != nil || got != want {
			t.Errorf("ParseForward(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "8080", "a:b", "0:80", "80:70000", "80:host:80", "80:fd00::1:80",
		"80:10.0.2.15,x=y:80", "1:2:3:4", "80:10.0.2.15:"} {
		if f, err := ParseForward(bad); err == nil {
			t.Errorf("ParseForward(%q) accepted: %+v", bad, f)
		}
	}
}
