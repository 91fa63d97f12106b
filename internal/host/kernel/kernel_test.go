package kernel

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDefaultCacheDir(t *testing.T) {
	tests := []struct {
		spine, xdg, home, want string
	}{
		{"/s", "/x", "/h", "/s"},
		{"", "/x", "/h", "/x/spine"},
		{"", "", "/h", "/h/.cache/spine"},
	}
	for _, tt := range tests {
		t.Setenv("SPINE_CACHE", tt.spine)
		t.Setenv("XDG_CACHE_HOME", tt.xdg)
		t.Setenv("HOME", tt.home)
		got, err := DefaultCacheDir()
		if err != nil || got != tt.want {
			t.Errorf("SPINE_CACHE=%q XDG_CACHE_HOME=%q HOME=%q: got %q, %v; want %q", tt.spine, tt.xdg, tt.home, got, err, tt.want)
		}
	}
}

// TestInstall checks the last step of Prepare: an incomplete directory is
// replaced, and a complete one that won a race is kept.
func TestInstall(t *testing.T) {
	cache := t.TempDir()
	dir := filepath.Join(cache, Release)
	newTmp := func(content string) string {
		tmp, err := os.MkdirTemp(cache, "tmp")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, markerName), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return tmp
	}

	// A crashed or older preparation without a valid marker.
	if err := os.MkdirAll(filepath.Join(dir, "junk"), 0o755); err != nil {
		t.Fatal(err)
	}
	if prepared(dir) {
		t.Fatal("a directory without marker counts as prepared")
	}
	if err := install(newTmp(markerContent), dir); err != nil {
		t.Fatal(err)
	}
	if !prepared(dir) {
		t.Fatal("not prepared after install")
	}
	if _, err := os.Stat(filepath.Join(dir, "junk")); !os.IsNotExist(err) {
		t.Fatalf("leftover of the incomplete directory: %v", err)
	}

	// A concurrent Prepare finished first: keep its directory.
	if err := install(newTmp(markerContent), dir); err != nil {
		t.Fatalf("install after a lost race: %v", err)
	}

	// A marker for another pin does not count.
	if err := os.WriteFile(filepath.Join(dir, markerName), []byte("linux-image-x=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if prepared(dir) {
		t.Fatal("a marker for another package version counts as prepared")
	}
}
