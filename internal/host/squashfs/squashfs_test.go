package squashfs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func needTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mksquashfs", "unsquashfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: apt-get install squashfs-tools", tool)
		}
	}
}

// tree writes a small tree with a setuid file, a symlink and a world-writable file.
func tree(t *testing.T, mtime bool) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tree")
	for _, f := range []struct {
		path, data string
		mode       os.FileMode
	}{
		{"bin/bay0", "bay0 binary", 0o755},
		{"bin/su", "setuid", 0o755 | fs.ModeSetuid},
		{"etc/spine/policy.json", "# policy\n", 0o644},
		{"open", "anyone", 0o666},
	} {
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("bay0", filepath.Join(dir, "bin/link")); err != nil {
		t.Fatal(err)
	}
	if mtime {
		// Different host timestamps must not reach the image.
		if err := os.Chtimes(filepath.Join(dir, "bin/bay0"), fixed, fixed); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var fixed = time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)

func sum(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestMakeReproducible(t *testing.T) {
	needTools(t)
	ctx := context.Background()
	out := t.TempDir()
	a, b, c := filepath.Join(out, "a"), filepath.Join(out, "b"), filepath.Join(out, "c")
	if err := Make(ctx, tree(t, false), a, 1700000000); err != nil {
		t.Fatal(err)
	}
	if err := Make(ctx, tree(t, true), b, 1700000000); err != nil {
		t.Fatal(err)
	}
	if sum(t, a) != sum(t, b) {
		t.Error("same tree and epoch, different bytes")
	}
	if err := Make(ctx, tree(t, false), c, 1700000001); err != nil {
		t.Fatal(err)
	}
	if sum(t, a) == sum(t, c) {
		t.Error("the epoch does not reach the image")
	}
}

// TestMakeUnderSourceDateEpoch: spine build runs with SOURCE_DATE_EPOCH set, and mksquashfs
// refuses that variable together with its own time options.
func TestMakeUnderSourceDateEpoch(t *testing.T) {
	needTools(t)
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	if err := Make(context.Background(), tree(t, false), filepath.Join(t.TempDir(), "x"), 1700000000); err != nil {
		t.Fatal(err)
	}
}

func TestMakeFails(t *testing.T) {
	needTools(t)
	if err := Make(context.Background(), filepath.Join(t.TempDir(), "missing"), filepath.Join(t.TempDir(), "x"), 0); err == nil {
		t.Error("Make of a missing directory succeeded")
	}
}

func TestListAndCat(t *testing.T) {
	needTools(t)
	ctx := context.Background()
	img := filepath.Join(t.TempDir(), "x.sqfs")
	if err := Make(ctx, tree(t, false), img, 0); err != nil {
		t.Fatal(err)
	}
	// An image is the filesystem followed by more data: List and Cat must still work.
	f, err := os.OpenFile(img, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(bytes.Repeat([]byte{0xa5}, 10000))
	f.Close()

	entries, err := List(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Entry{}
	var order []string
	for _, e := range entries {
		got[e.Path] = e
		order = append(order, e.Path)
	}
	want := []string{"", "bin", "bin/bay0", "bin/link", "bin/su", "etc", "etc/spine", "etc/spine/policy.json", "open"}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("paths = %q, want %q", order, want)
	}
	for _, w := range []Entry{
		{Path: "", Mode: fs.ModeDir | 0o755},
		{Path: "bin/bay0", Mode: 0o755, Size: 11},
		{Path: "bin/su", Mode: fs.ModeSetuid | 0o755, Size: 6},
		{Path: "bin/link", Mode: fs.ModeSymlink | 0o777, Size: 4, Target: "bay0"},
		{Path: "open", Mode: 0o666, Size: 6},
	} {
		g := got[w.Path]
		if w.Mode.IsDir() {
			g.Size = 0
		}
		if g != w {
			t.Errorf("entry %+v, want %+v", g, w)
		}
	}
	data, err := Cat(ctx, img, "etc/spine/policy.json")
	if err != nil || string(data) != "# policy\n" {
		t.Errorf("Cat = %q, %v", data, err)
	}
	if _, err := Cat(ctx, img, "no/such/file"); err == nil {
		t.Error("Cat of a missing file succeeded")
	}
	if _, err := List(ctx, filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("List of a missing image succeeded")
	}
}

// TestListDevices lists device nodes made with a mksquashfs pseudo-file definition: no
// root or mknod needed, and the listing prints "maj, min" where a size would be.
func TestListDevices(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "dev.sqfs")
	out, err := exec.Command("mksquashfs", tree(t, false), img, "-noappend", "-quiet", "-no-progress", "-all-root",
		"-p", "dev d 755 0 0", "-p", "dev/null c 666 0 0 1 3", "-p", "dev/sda b 600 0 0 8 0").CombinedOutput()
	if err != nil {
		t.Fatalf("mksquashfs: %v\n%s", err, out)
	}
	entries, err := List(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]fs.FileMode{}
	for _, e := range entries {
		got[e.Path] = e.Mode
	}
	if m := got["dev/null"]; m != fs.ModeDevice|fs.ModeCharDevice|0o666 {
		t.Errorf("dev/null mode %v", m)
	}
	if m := got["dev/sda"]; m != fs.ModeDevice|0o600 {
		t.Errorf("dev/sda mode %v", m)
	}
}

func TestParseListing(t *testing.T) {
	in := `Parallel unsquashfs: Using 2 processors
drwxr-xr-x 0/0                      46 2026-11-26 23:18 squashfs-root
drwxr-xr-x 0/0                      33 2026-11-26 23:18 squashfs-root/bin
-rwsr-xr-x 0/0                       3 2026-11-26 23:18 squashfs-root/bin/a
lrwxrwxrwx 0/0                       1 2026-11-26 23:18 squashfs-root/bin/l -> a
crw-rw-rw- 0/0                   1,  3 2026-11-26 23:18 squashfs-root/dev/null
brw------- 0/0                   8,  0 2026-11-26 23:18 squashfs-root/dev/sda
prw-r--r-- 0/0                       0 2026-11-26 23:18 squashfs-root/f
srw-rw---- 0/0                       0 2026-11-26 23:18 squashfs-root/s
-rw-r-Sr-T 0/0                       9 2026-11-26 23:18 squashfs-root/with space
drwxrwsrwt 0/0                       3 2026-11-26 23:18 squashfs-root/tmp
`
	got, err := ParseListing(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{Path: "", Mode: fs.ModeDir | 0o755, Size: 46},
		{Path: "bin", Mode: fs.ModeDir | 0o755, Size: 33},
		{Path: "bin/a", Mode: fs.ModeSetuid | 0o755, Size: 3},
		{Path: "bin/l", Mode: fs.ModeSymlink | 0o777, Size: 1, Target: "a"},
		{Path: "dev/null", Mode: fs.ModeDevice | fs.ModeCharDevice | 0o666},
		{Path: "dev/sda", Mode: fs.ModeDevice | 0o600},
		{Path: "f", Mode: fs.ModeNamedPipe | 0o644},
		{Path: "s", Mode: fs.ModeSocket | 0o660},
		{Path: "with space", Mode: fs.ModeSetgid | fs.ModeSticky | 0o644, Size: 9},
		{Path: "tmp", Mode: fs.ModeDir | fs.ModeSetgid | fs.ModeSticky | 0o777, Size: 3},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseListing =\n%+v\nwant\n%+v", got, want)
	}
	for _, bad := range []string{
		"drwxr-xr-x squashfs-root\n",
		"qrwxr-xr-x 0/0 1 2026-11-26 23:18 squashfs-root/x\n",
		"drwxr-xr 0/0 1 2026-11-26 23:18 squashfs-root/x\n",
	} {
		if _, err := ParseListing(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseListing(%q) succeeded", bad)
		}
	}
}
