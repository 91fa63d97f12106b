package kernel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	got, err := ParseConfig([]byte("# comment\n\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\nCONFIG_D=n\nCONFIG_E=-1\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": `"x y"`, "CONFIG_D": "n", "CONFIG_E": "-1"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	for _, bad := range []struct{ in, msg string }{
		{"CONFIG_A=y\nCONFIG_A=n\n", "line 2: CONFIG_A given twice"},
		{"CONFIG_A\n", `line 1: "CONFIG_A" is not CONFIG_NAME=value`},
		{"CONFIG_A=\n", "line 1"},
		{"X=y\n", `"X" is not an option name`},
		{"CONFIG_A B=y\n", "is not an option name"},
	} {
		_, err := ParseConfig([]byte(bad.in))
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), bad.msg) {
			t.Errorf("ParseConfig(%q) = %v, want ErrConfig with %q", bad.in, err, bad.msg)
		}
	}
}

func TestCheckConfig(t *testing.T) {
	frag := []byte("CONFIG_A=y\nCONFIG_B=n\nCONFIG_C=-1\nCONFIG_D=n\n")
	if err := CheckConfig(frag, []byte("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=-1\nCONFIG_X=y\n")); err != nil {
		t.Fatalf("a .config that keeps every option: %v", err)
	}
	err := CheckConfig(frag, []byte("CONFIG_B=y\nCONFIG_C=0\n"))
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("got %v, want ErrConfig", err)
	}
	for _, w := range []string{"CONFIG_A=y (got n)", "CONFIG_B=n (got y)", "CONFIG_C=-1 (got 0)"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q", err, w)
		}
	}
	if err := CheckConfig([]byte("bad line\n"), nil); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "fragment") {
		t.Errorf("bad fragment: %v", err)
	}
}

// TestFragment checks the embedded fragment: it parses, and every option group has a reason
// (a comment right above it).
func TestFragment(t *testing.T) {
	if _, err := ParseConfig(Fragment); err != nil {
		t.Fatal(err)
	}
	prev := ""
	for i, line := range strings.Split(string(Fragment), "\n") {
		if strings.HasPrefix(line, "CONFIG_") && prev == "" {
			t.Errorf("spine.config line %d: a group starts without a comment saying why", i+1)
		}
		prev = line
	}
}

// TestBuildEnv: the build sees nothing of the caller's environment but PATH, and records the
// epoch, not the clock.
func TestBuildEnv(t *testing.T) {
	t.Setenv("MAKEFLAGS", "-j64")
	t.Setenv("CC", "clang")
	env := buildEnv("/bin", 1767225600, "")
	want := []string{
		"PATH=/bin", "SOURCE_DATE_EPOCH=1767225600", "KBUILD_BUILD_TIMESTAMP=Thu Jan  1 00:00:00 UTC 2026",
		"KBUILD_BUILD_USER=spine", "KBUILD_BUILD_HOST=spine", "KBUILD_BUILD_VERSION=1", "LC_ALL=C",
	}
	for _, w := range want {
		if !slices.Contains(env, w) {
			t.Errorf("build environment lacks %q: %q", w, env)
		}
	}
	for _, e := range env {
		if strings.HasPrefix(e, "MAKEFLAGS=") || strings.HasPrefix(e, "CC=") || strings.HasPrefix(e, "LOCALVERSION") {
			t.Errorf("build environment inherits or adds %q", e)
		}
	}
	if env := buildEnv("/bin", 1767225600, ".2"); !slices.Contains(env, "LOCALVERSION=.2") {
		t.Errorf("an extra version does not reach the build: %q", env)
	}
}

func TestExtraVersion(t *testing.T) {
	for _, ok := range []string{"", ".2", "-next+1_a"} {
		if err := checkExtraVersion(ok); err != nil {
			t.Errorf("extra version %q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{" 2", "a/b", "x\n", `"`, strings.Repeat("a", 33)} {
		if err := checkExtraVersion(bad); !errors.Is(err, ErrConfig) {
			t.Errorf("extra version %q: %v, want ErrConfig", bad, err)
		}
	}
	if got := (Options{ExtraVersion: ".2"}).release(Source{Version: "6.1.192-2"}); got != "6.1.192-spine.2" {
		t.Errorf("release with extra version: %q", got)
	}
}

func TestKey(t *testing.T) {
	src := Source{Version: "6.1.192-2"}
	k := key(src, 1, Fragment, nil, "")
	if !strings.HasPrefix(k, "6.1.192-2-") || key(src, 1, Fragment, nil, "") != k || key(src, 2, Fragment, nil, "") == k || key(Source{Version: "6.1.193-1"}, 1, Fragment, nil, "") == k {
		t.Errorf("key does not follow source version and epoch: %q", k)
	}
	// Another release name is another kernel.
	if kx := key(src, 1, Fragment, nil, ".2"); !strings.HasPrefix(kx, "6.1.192-2-x-") || kx == k || kx == key(src, 1, Fragment, nil, ".3") {
		t.Errorf("extra version keys: %q", kx)
	}
	// A stage 0 image is its own cache entry, one per built-in initramfs and command line.
	s1 := &Stage0{Initramfs: []byte("archive one"), Cmdline: "console=ttyS0"}
	f1, err := s1.fragment()
	if err != nil {
		t.Fatal(err)
	}
	s2 := &Stage0{Initramfs: []byte("archive two"), Cmdline: "console=ttyS0"}
	f2, _ := s2.fragment()
	k1 := key(src, 1, f1, s1, "")
	if !strings.HasPrefix(k1, "6.1.192-2-stage0-") || k1 == key(src, 1, f2, s2, "") || k1 == k {
		t.Errorf("stage 0 keys: %q %q", k1, key(src, 1, f2, s2, ""))
	}
	for _, want := range []string{`CONFIG_INITRAMFS_SOURCE="stage0.cpio"`, `CONFIG_CMDLINE="console=ttyS0 noinitrd"`, "CONFIG_CMDLINE_OVERRIDE=y"} {
		if !strings.Contains(string(f1), want) {
			t.Errorf("stage 0 fragment lacks %s", want)
		}
	}
	if err := CheckConfig(f1, f1); err != nil {
		t.Errorf("stage 0 fragment does not parse: %v", err)
	}
	for _, bad := range []Stage0{{Cmdline: "console=ttyS0"}, {Initramfs: []byte("x"), Cmdline: `a"b`}, {Initramfs: []byte("x"), Cmdline: "a\nb"}} {
		if _, err := bad.fragment(); !errors.Is(err, ErrConfig) {
			t.Errorf("stage 0 %+v: %v", bad, err)
		}
	}
	if got := src.Release(); got != "6.1.192-spine" {
		t.Errorf("Release() = %q", got)
	}
}

// TestLock: a second locker waits while the first holds the lock, gives up with its context,
// and gets the lock once it is released.
func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.lock")
	unlock, err := lock(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var log strings.Builder
	if _, err := lock(ctx, path, &log); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second lock while held: %v", err)
	}
	if !strings.Contains(log.String(), "waiting") {
		t.Errorf("the waiter said nothing: %q", log.String())
	}
	unlock()
	unlock2, err := lock(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	unlock2()
}

// TestLoadRefusesIncomplete: a directory without its marker, or with a malformed one, is not
// a kernel.
func TestLoadRefusesIncomplete(t *testing.T) {
	dir := t.TempDir()
	if _, err := load(dir, Source{}); err == nil {
		t.Fatal("a directory without marker loaded")
	}
	if err := os.WriteFile(filepath.Join(dir, markerName), []byte("6.1.1-spine abc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := load(dir, Source{}); err == nil {
		t.Fatal("a malformed marker loaded")
	}
	sum := strings.Repeat("0", 64)
	if err := os.WriteFile(filepath.Join(dir, markerName), []byte("6.1.1-spine "+sum+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	k, err := load(dir, Source{Version: "6.1.1-1"})
	if err != nil || k.Release != "6.1.1-spine" || k.SHA256 != sum || k.Image != filepath.Join(dir, imageName) {
		t.Fatalf("load = %+v, %v", k, err)
	}
}

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

// TestImageRelease reads the release from a synthetic boot header, and refuses files that are
// not bzImages or whose version string is unreadable.
func TestImageRelease(t *testing.T) {
	dir := t.TempDir()
	img := func(version string, magic string) string {
		b := make([]byte, 0x400)
		copy(b[0x202:], magic)
		binary.LittleEndian.PutUint16(b[0x20e:], 0x100) // the string at 0x300
		copy(b[0x300:], version+"\x00")
		p := filepath.Join(dir, fmt.Sprintf("img%d", len(version)+len(magic)))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if got, err := ImageRelease(img("6.1.192-spine (spine@spine) #1 SMP", "HdrS")); err != nil || got != "6.1.192-spine" {
		t.Errorf("ImageRelease = %q, %v", got, err)
	}
	for name, p := range map[string]string{
		"no header":      img("6.1.192-spine", "MZ!!"),
		"empty version":  img("", "HdrS"),
		"binary version": img("6.1\x01x", "HdrS"),
		"missing file":   filepath.Join(dir, "none"),
	} {
		if _, err := ImageRelease(p); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
