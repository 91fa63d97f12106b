package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

	bin := buildBay0(t)
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bay0 is %d bytes (%.1f MiB) stripped", fi.Size(), float64(fi.Size())/(1<<20))
}

// buildBay0 builds bay0 as the Makefile does and returns its path.
func buildBay0(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bay0")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// maxInitBytes bounds what one package's initialisation may allocate in bay0. Every bay0
// start pays for it, persona-init's included: a regular expression with a bounded repeat
// compiled into a package variable cost each persona start milliseconds (issue 17).
// Expensive values are built on first use (sync.OnceValue) instead.
const maxInitBytes = 64 << 10

// TestBay0InitIsCheap runs bay0 outside PID 1, where it stops right after the package
// initialisation, with the runtime's init trace on, and fails on any package whose init
// allocates more than maxInitBytes. Allocations, unlike times, are the same on every run.
func TestBay0InitIsCheap(t *testing.T) {
	cmd := exec.Command(buildBay0(t))
	cmd.Env = []string{"GODEBUG=inittrace=1"}
	out, _ := cmd.CombinedOutput() // bay0 refuses to run as anything but PID 1
	var total, n int
	for _, line := range strings.Split(string(out), "\n") {
		// init PKG @T ms, D ms clock, B bytes, A allocs
		f := strings.Fields(line)
		if len(f) < 10 || f[0] != "init" || f[8] != "bytes," {
			continue
		}
		b, err := strconv.Atoi(f[7])
		if err != nil {
			t.Fatalf("init trace line %q: %v", line, err)
		}
		n++
		total += b
		if b > maxInitBytes {
			t.Errorf("package %s allocates %d bytes at init, more than %d: build it on first use", f[1], b, maxInitBytes)
		}
	}
	if n == 0 {
		t.Fatalf("no init trace from bay0:\n%s", out)
	}
	t.Logf("%d package inits allocate %d bytes in all", n, total)
}

func allowed(pkg string) bool {
	for _, m := range pid1Modules {
		if pkg == strings.TrimSuffix(m, "/") || strings.HasPrefix(pkg, m) {
			return true
		}
	}
	return false
}
