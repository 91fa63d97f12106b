package persist

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The project quota path needs ext4 with project quotas, which the host's kernel may lack:
// e2e/persist_test.go (TestPersonaCannotFillPersist) proves it in the guest. Here: what is
// refused before any quota call, and that a directory without project quotas is an error, not
// a persona without a limit.

func TestEnsureSubtreeRefuses(t *testing.T) {
	root := t.TempDir()
	victim := t.TempDir()
	if err := os.Symlink(victim, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, s := range []Subtree{
		{Name: "", Limit: 1},
		{Name: ".", Limit: 1},
		{Name: "..", Limit: 1},
		{Name: "a/b", Limit: 1},
		{Name: "link", Limit: 1},
		{Name: "file", Limit: 1},
		{Name: "ok", UID: -1, Limit: 1},
		{Name: "ok", Limit: 0},
	} {
		if _, err := EnsureSubtree(root, s); err == nil {
			t.Errorf("EnsureSubtree(%+v) accepted it", s)
		}
	}
	if _, err := os.Stat(filepath.Join(victim, "ok")); err == nil {
		t.Error("EnsureSubtree created something through a symlink")
	}
	if _, err := EnsureSubtree(filepath.Join(root, "link"), Subtree{Name: "app", Limit: 1 << 20}); err == nil {
		t.Error("EnsureSubtree followed a symlinked root")
	}
}

// TestEnsureSubtreeNeedsQuotas: on a filesystem without project quotas the subtree is not
// handed out without its limit.
func TestEnsureSubtreeNeedsQuotas(t *testing.T) {
	root := t.TempDir()
	_, err := EnsureSubtree(root, Subtree{Name: "app", UID: os.Getuid(), GID: os.Getgid(), Limit: 1 << 20})
	if err == nil {
		// This host's filesystem has project quotas: the limit must then be in force.
		if _, _, limit, err := Usage(root, uint32(os.Getuid())); err != nil || limit != 1<<20 {
			t.Errorf("project limit %d, %v; want 1 MiB", limit, err)
		}
		return
	}
	if !strings.Contains(err.Error(), "project") {
		t.Errorf("error %v does not name the project quota", err)
	}
}
