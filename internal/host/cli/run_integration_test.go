//go:build integration

package cli

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/host/build"
)

// TestRunComplain runs a workload that needs two calls beyond the default allowlist and one
// below the floor with spine run, on this host, in its persona's namespaces: refused without
// --complain, allowed and listed with it, the floor call refused and named either way.
func TestRunComplain(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("spine run needs root (user namespaces with a persona's uid range)")
	}
	dir := t.TempDir()
	repo, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	spine := filepath.Join(dir, "spine")
	if err := build.GoStatic(context.Background(), repo, "./cmd/spine", spine); err != nil {
		t.Fatal(err)
	}
	if err := build.GoStatic(context.Background(), repo, "./internal/host/cli/testdata/needs", filepath.Join(dir, "tree", "bin", "needs")); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "spine.toml")
	conf := "name = \"t\"\nversion = 1\n[[persona]]\nname = \"needs\"\nexec = [\"/bin/needs\"]\ncpus = 0.5\nmemory = \"32MiB\"\npids = 8\n[persona.source]\ndir = \"tree\"\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(spine, append([]string{"run", "--config", cfg}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("spine run %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := run("needs")
	if !strings.Contains(out, "needs: mbind operation not permitted, sethostname operation not permitted, unshare operation not permitted") {
		t.Errorf("without --complain:\n%s", out)
	}
	out = run("--complain", "needs")
	for _, want := range []string{
		"needs: mbind errno 0", // allowed, and it ran
		"unshare operation not permitted",
		`syscalls = ["mbind", "sethostname"]`,
		"below the floor, which no policy can allow: unshare",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("with --complain, no %q in:\n%s", want, out)
		}
	}
}
