package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// personaInitLinks is all of the module and third-party code persona-init may link: every
// launch starts it, so each package more is paid at every persona start (issue 17).
var personaInitLinks = []string{
	"alpinespine.org/spine/cmd/persona-init",
	"alpinespine.org/spine/internal/bay0/launch",
	"alpinespine.org/spine/internal/bay0/netlink",
	"alpinespine.org/spine/internal/bay0/personainit",
	"alpinespine.org/spine/internal/bay0/seccomp/prog",
	"golang.org/x/sys/unix",
}

// heavyStd are standard packages (and their subpackages) whose initialisation or code
// persona-init has no use for; net/netip, which it parses its uplink with, is not net.
var heavyStd = []string{"regexp", "crypto", "net/http", "os/exec", "compress", "encoding/xml"}

// TestPersonaInitStaysSmall fails when persona-init grows a dependency beyond what its setup
// needs: the system call table and filter compiler, the courier's formats, bay0's storage code
// and the crypto they bring stay in bay0.
func TestPersonaInitStaysSmall(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, d := range strings.Fields(string(out)) {
		first := strings.SplitN(d, "/", 2)[0]
		switch {
		case strings.Contains(first, "."):
			if !slices.Contains(personaInitLinks, d) {
				t.Errorf("persona-init links %s", d)
			}
		case d == "net" || slices.ContainsFunc(heavyStd, func(h string) bool { return d == h || strings.HasPrefix(d, h+"/") }):
			t.Errorf("persona-init links the standard package %s", d)
		}
	}
}
