package syscalls

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	if err := Check("accept4"); err != nil {
		t.Errorf("accept4: %v", err)
	}
	err := Check("epoll_create2")
	if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "epoll_create1") {
		t.Errorf("epoll_create2: %v, want unknown naming epoll_create1", err)
	}
	if err := Check("zzzzzzzzzzzzzzzzzzzzzz"); !errors.Is(err, ErrUnknown) || strings.Contains(err.Error(), "did you mean") {
		t.Errorf("nonsense: %v, want unknown with no suggestion", err)
	}
	for _, n := range []string{"unshare", "setns", "mount", "init_module", "kexec_load", "bpf", "ptrace",
		"perf_event_open", "keyctl", "userfaultfd", "io_uring_setup", "reboot", "clock_settime", "swapon"} {
		err := Check(n)
		if !errors.Is(err, ErrFloor) || !strings.Contains(err.Error(), `"`+n+`"`) {
			t.Errorf("%s: %v, want a floor refusal naming it", n, err)
		}
	}
}

func TestFloorNamesAreKnown(t *testing.T) {
	for _, f := range Floor() {
		if _, ok := Number(f[0]); !ok {
			t.Errorf("floor names unknown call %q", f[0])
		}
	}
}

func TestNameNumber(t *testing.T) {
	if nr, ok := Number("accept4"); !ok || nr != 288 || Name(288) != "accept4" {
		t.Errorf("accept4 = %d %v, 288 = %q", nr, ok, Name(288))
	}
	if Name(100000) != "" {
		t.Error("a number with no call has a name")
	}
}

func TestNearest(t *testing.T) {
	got := Nearest("acept4", 3)
	if len(got) == 0 || got[0] != "accept4" {
		t.Errorf("Nearest(acept4) = %v", got)
	}
}

// TestREADMEListsTheFloor: the README's list of the floor is the floor.
func TestREADMEListsTheFloor(t *testing.T) {
	b, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "**the floor is never allowed**")
	section, _, _ := strings.Cut(after, "- **sockets**")
	if !ok {
		t.Fatal("the README has no floor section")
	}
	for _, f := range Floor() {
		if !strings.Contains(section, "`"+f[0]+"`") {
			t.Errorf("the README's floor does not list %s (%s)", f[0], f[1])
		}
	}
}
