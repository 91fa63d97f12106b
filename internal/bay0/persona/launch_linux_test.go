package persona

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func owner(t *testing.T, p string) (uint32, uint32) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

// TestEnsureDataDir needs root (chown), as the governor has.
func TestEnsureDataDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test chowns files and must run as root, as bay0 does")
	}
	dir := filepath.Join(t.TempDir(), "web")
	if err := EnsureDataDir(dir, IDRange(1), IDRange(1)); err != nil {
		t.Fatal(err)
	}
	if u, g := owner(t, dir); u != IDRange(1) || g != IDRange(1) {
		t.Fatalf("new data dir owned by %d:%d", u, g)
	}
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("new data dir mode %v, want 0700", fi.Mode().Perm())
	}
	// The persona moved to another index: everything it owns follows it.
	if err := os.WriteFile(filepath.Join(dir, "counter"), []byte("1"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("counter", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := EnsureDataDir(dir, IDRange(3), IDRange(3)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(dir, "counter"), filepath.Join(dir, "link")} {
		if u, g := owner(t, p); u != IDRange(3) || g != IDRange(3) {
			t.Errorf("%s owned by %d:%d after the move", p, u, g)
		}
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if err := EnsureDataDir(file, 1, 1); err == nil {
		t.Error("a file was accepted as a data dir")
	}
}
