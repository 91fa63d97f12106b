//go:build e2e

package e2e

import (
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// Article III §4 (replace, never repair) and Article VIII (no stuck states): a persona whose
// working set is larger than its memory.max thrashes on its own file pages; the OOM killer never
// comes, so bay0 watches PSI and replaces it once it has been stuck for its stall window (the
// default, 10 s), saying why. Its neighbour's heartbeat goes on.
func TestPersonaThrashingIsReplaced(t *testing.T) {
	t.Parallel()
	tree := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tree, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	hog, err := os.ReadFile(filepath.Join(personaTree(t, "hog"), "bin", "hog"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "bin", "hog"), hog, 0o755); err != nil {
		t.Fatal(err)
	}
	// Random bytes do not compress: SquashFS stores them as they are, and every page read back
	// after eviction is real I/O.
	big := make([]byte, 32<<20)
	rand.New(rand.NewSource(12)).Read(big)
	if err := os.WriteFile(filepath.Join(tree, "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	thrash := "[[persona]]\nname = \"thrash\"\nexec = [\"/bin/hog\", \"thrash\", \"24\", \"/big.bin\"]\n" +
		"cpus = 1\nmemory = \"40MiB\"\npids = 32\norder = 2\n[persona.source]\ndir = \"" + tree + "\"\n"
	img := buildPersonaSpine(t, neighbour(t), thrash)
	cfg := machine(makeDisk(t, img, img, nil))
	cfg.Timeout = 5 * time.Minute
	v := vmtest.Boot(t, cfg)
	first := v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "thrash"))
	v.WaitPersona(t, "thrash", "hog: thrash: holding 24 MiB", bootTimeout)
	start := time.Now()
	stuck := v.WaitEvent(t, event.PersonaStuck, 3*time.Minute, kv("name", "thrash"))
	took := time.Since(start)
	second := v.WaitEvent(t, event.PersonaStarted, bootTimeout, kv("name", "thrash"))
	if first.Value("pid") == second.Value("pid") {
		t.Errorf("the replacement has the same pid: %v", second)
	}
	reason := stuck.Value("reason")
	if !strings.HasPrefix(reason, "stuck at memory.max for 1") || !strings.Contains(reason, "refaulted") {
		t.Errorf("the replacement does not give the reason: %q", reason)
	}
	if !v.Saw("bay0: persona thrash " + reason + "; replacing it") {
		t.Error("the console does not say why the persona was replaced")
	}
	t.Logf("replaced %s after it began thrashing: %s", took.Round(time.Second), reason)
	// 10 s of window, sampled each second, on a slow emulated machine.
	if took > 40*time.Second {
		t.Errorf("replaced %s after it began thrashing, want about its 10s window", took)
	}
	heartbeatGoesOn(t, v)
	v.Kill(t)
	v.NeverEvent(t, event.Halt)
	v.NeverEvent(t, event.PersonaExited, kv("name", "thrash"))
	v.NeverEvent(t, event.PersonaExited, kv("name", "beat"))
}
