package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// pid1Modules are the only code outside the standard library that PID 1 may link: raw system
// calls, the crypto that unlocks /persist, the BPF assembler for seccomp, and device-mapper ioctls.
var pid1Modules = []string{
	"golang.org/x/sys/",
	"golang.org/x/crypto/argon2",
	"golang.org/x/crypto/blake2b",
	"golang.org/x/crypto/pbkdf2",
	"golang.org/x/crypto/xts",
	"golang.org/x/crypto/internal/",
	"golang.org/x/net/bpf",
	"github.com/anatol/devmapper.go",
}

// forbiddenStd are standard packages whose presence means PID 1 grew a door: a network stack
// (the control channel is a serial line), a way to run programs (bay0 runs only personas,
// through its own clone path), or parsers it has no business with.
var forbiddenStd = []string{"net", "net/http", "os/exec", "crypto/x509", "crypto/tls", "plugin", "text/template", "html/template"}

// TestBay0DependencyBoundary fails when bay0's dependency set grows past its boundary: no host
// tool, no network or exec package, no library PID 1 does not need.
func TestBay0DependencyBoundary(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	var std, ours, third []string
	for _, d := range deps {
		switch {
		case strings.HasPrefix(d, "alpinespine.org/spine/"):
			ours = append(ours, d)
			rel := strings.TrimPrefix(d, "alpinespine.org/spine/")
			if !strings.HasPrefix(rel, "internal/bay0/") && !strings.HasPrefix(rel, "internal/format/") && rel != "cmd/bay0" {
				t.Errorf("bay0 links %s: only internal/bay0 and internal/format belong in PID 1", d)
			}
		case strings.Contains(strings.SplitN(d, "/", 2)[0], "."):
			third = append(third, d)
			if !allowed(d) {
				t.Errorf("bay0 links %s, which PID 1 does not need", d)
			}
		default:
			std = append(std, d)
			for _, f := range forbiddenStd {
				if d == f {
					t.Errorf("bay0 links the standard package %s", d)
				}
			}
		}
	}
	t.Logf("bay0 links %d packages: %d standard, %d of ours, %d third-party:\n  %s", len(deps), len(std), len(ours), len(third), strings.Join(third, "\n  "))

	bin := filepath.Join(t.TempDir(), "bay0")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bay0 is %d bytes (%.1f MiB) stripped", fi.Size(), float64(fi.Size())/(1<<20))
}

func allowed(pkg string) bool {
	for _, m := range pid1Modules {
		if pkg == strings.TrimSuffix(m, "/") || strings.HasPrefix(pkg, m) {
			return true
		}
	}
	return false
}
