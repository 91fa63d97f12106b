package debtree

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"reflect"
	"strings"
	"testing"
)

const simulation = `NOTE: This is only a simulation!
      apt-get needs root privileges for real execution.
Reading package lists...
Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])
Inst libgcc-s1 (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64]) []
Inst libcap2 (1:2.66-4+deb12u3+b1 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [amd64])
Inst nginx-common (1.22.1-9+deb12u11 Debian-Security:12/oldstable-security [all])
Conf gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])
`

func TestParseSimulation(t *testing.T) {
	got, err := parseSimulation(strings.NewReader(simulation))
	if err != nil {
		t.Fatal(err)
	}
	want := []Package{
		{"gcc-12-base", "12.2.0-14+deb12u1", "amd64"},
		{"libcap2", "1:2.66-4+deb12u3+b1", "amd64"},
		{"libgcc-s1", "12.2.0-14+deb12u1", "amd64"},
		{"nginx-common", "1.22.1-9+deb12u11", "all"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if f := want[1].FileName(); f != "libcap2_1%3a2.66-4+deb12u3+b1_amd64.deb" {
		t.Errorf("file name %s", f)
	}
	for _, bad := range []string{
		"",
		"Inst -o (1 x [amd64])",
		"Inst foo (1 x [arm64])",
		"Inst foo (1 x [amd64])\nInst foo (2 x [amd64])",
		"Inst foo (1;rm x [amd64])",
		"Inst garbage",
	} {
		if _, err := parseSimulation(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// FuzzParseSimulation: parse -> render -> parse gives the same packages.
func FuzzParseSimulation(f *testing.F) {
	f.Add(simulation)
	f.Add("Inst a1 (1:2~3 x [all])\nInst b2:amd64 (0 y [amd64])")
	f.Fuzz(func(t *testing.T, s string) {
		pkgs, err := parseSimulation(strings.NewReader(s))
		if err != nil {
			return
		}
		var b strings.Builder
		for _, p := range pkgs {
			fmt.Fprintf(&b, "Inst %s (%s Debian [%s])\n", p.Name, p.Version, p.Arch)
			if CheckName(p.String()) != nil {
				t.Fatalf("parsed %v, which is not a valid pin", p)
			}
		}
		again, err := parseSimulation(strings.NewReader(b.String()))
		if err != nil || !reflect.DeepEqual(again, pkgs) {
			t.Fatalf("round trip: %v %v, want %v", again, err, pkgs)
		}
	})
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"nginx-light", "libstdc++6", "tini=0.19.0-1+b3", "libcap2=1:2.66-4"} {
		if err := CheckName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-oDir::Etc=/tmp", "Nginx", "a", "nginx*", "x=", "x=1 2", "../x"} {
		if err := CheckName(bad); !errors.Is(err, ErrBadName) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func needTools(t *testing.T) {
	t.Helper()
	for tool, pkg := range map[string]string{"apt-get": "apt", "dpkg-deb": "dpkg"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: a Debian build host with %s installed is required", tool, pkg)
		}
	}
}

func TestResolveUnknown(t *testing.T) {
	needTools(t)
	_, err := Resolve(context.Background(), []string{"tini", "no-such-package-spine"})
	if err == nil || !strings.Contains(err.Error(), "no-such-package-spine") {
		t.Fatalf("Resolve = %v, want an error naming the package", err)
	}
}
