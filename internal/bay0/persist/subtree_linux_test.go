package persist

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestEnsureSubtree(t *testing.T) {
	root := t.TempDir()
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		uid, gid = 4242, 4343 // as root, prove the chown too
	}
	p, err := EnsureSubtree(root, "app", uid, gid)
	if err != nil {
		t.Fatal(err)
	}
	if p != filepath.Join(root, "app") {
		t.Errorf("path %q", p)
	}
	check := func() {
		t.Helper()
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		s := st.Sys().(*syscall.Stat_t)
		if !st.IsDir() || st.Mode().Perm() != SubtreeMode || int(s.Uid) != uid || int(s.Gid) != gid {
			t.Errorf("%s: mode %v owner %d:%d, want dir %o %d:%d", p, st.Mode(), s.Uid, s.Gid, SubtreeMode, uid, gid)
		}
	}
	check()
	// Existing, with the wrong mode: repaired, contents kept.
	if err := os.WriteFile(filepath.Join(p, "keep"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureSubtree(root, "app", uid, gid); err != nil {
		t.Fatal(err)
	}
	check()
	if _, err := os.Stat(filepath.Join(p, "keep")); err != nil {
		t.Errorf("contents lost: %v", err)
	}
}

func TestEnsureSubtreeRefuses(t *testing.T) {
	root := t.TempDir()
	victim := t.TempDir()
	if err := os.Chmod(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(root, "evil")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"evil", "file", "", ".", "..", "a/b", "a\x00b"} {
		if _, err := EnsureSubtree(root, name, os.Getuid(), os.Getgid()); err == nil {
			t.Errorf("EnsureSubtree(%q) accepted it", name)
		}
	}
	if st, err := os.Stat(victim); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("the symlink's target was touched: %v, %v", st.Mode(), err)
	}
	// A symlinked root is refused too.
	if err := os.Symlink(root, filepath.Join(victim, "root")); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureSubtree(filepath.Join(victim, "root"), "app", os.Getuid(), os.Getgid()); err == nil {
		t.Error("EnsureSubtree followed a symlinked root")
	}
}
