package audit

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const testPolicy = `{"persona": [{"name": "app", "exec": ["/bin/app"], "cpus": 0.5, "memory": "16MiB", "pids": 8}]}
`

// cleanTree is the smallest Spine the constitution allows, with one persona whose tree
// holds a shell (fine: the persona's own business, inside its sandbox).
func cleanTree() []File {
	d := fs.ModeDir | 0o755
	return []File{
		{"", d}, {"bin", d}, {"bin/bay0", 0o755}, {"bin/persona-init", 0o755},
		{"etc", d}, {"etc/spine", d}, {"etc/spine/policy.json", 0o644},
		{"personas", d}, {"personas/app", d}, {"personas/app/bin", d},
		{"personas/app/bin/app", 0o755}, {"personas/app/bin/sh", 0o755},
		{"personas/app/bin/bash", fs.ModeSymlink | 0o777},
		{"proc", d}, {"sys", d}, {"dev", d}, {"run", d}, {"tmp", d}, {"persist", d},
	}
}

// replaced is the clean tree with the mode of one entry changed.
func replaced(path string, mode fs.FileMode) []File {
	files := cleanTree()
	for i := range files {
		if files[i].Path == path {
			files[i].Mode = mode
		}
	}
	return files
}

func reader(files map[string]string) Reader {
	return func(rel string) ([]byte, error) {
		s, ok := files[rel]
		if !ok {
			return nil, fmt.Errorf("open %s: %w", rel, fs.ErrNotExist)
		}
		return []byte(s), nil
	}
}

var cleanContents = map[string]string{"etc/spine/policy.json": testPolicy, "bin/bay0": "\x7fELF static bay0"}

func TestClean(t *testing.T) {
	if v := Check(cleanTree(), reader(cleanContents)); len(v) != 0 {
		t.Errorf("clean tree has violations: %v", v)
	}
}

// TestRules has one case per rule: the tree is the clean one plus extra entries, and the
// listed violations (path and rule) must all be reported.
func TestRules(t *testing.T) {
	const file, exe, dir = fs.FileMode(0o644), fs.FileMode(0o755), fs.ModeDir | 0o755
	type v = Violation
	for _, tc := range []struct {
		name  string
		extra []File
		want  []Violation
	}{
		{"shell outside persona", []File{{"bin/sh", exe}},
			[]v{{"bin/sh", "shell outside a persona tree"}}},
		{"busybox outside persona", []File{{"bin/busybox", exe}},
			[]v{{"bin/busybox", "shell outside a persona tree"}}},
		{"shell symlink outside persona", []File{{"bin/ash", fs.ModeSymlink | 0o777}},
			[]v{{"bin/ash", "shell outside a persona tree"}}},
		{"package manager dpkg", []File{{"personas/app/usr/bin/dpkg", exe}},
			[]v{{"personas/app/usr/bin/dpkg", "package manager"}}},
		{"package manager apt-get", []File{{"personas/app/usr/bin/apt-get", exe}},
			[]v{{"personas/app/usr/bin/apt-get", "package manager"}}},
		{"package manager apk", []File{{"personas/app/sbin/apk", exe}},
			[]v{{"personas/app/sbin/apk", "package manager"}}},
		{"package database", []File{{"personas/app/var", dir}, {"personas/app/var/lib", dir}, {"personas/app/var/lib/dpkg", dir}},
			[]v{{"personas/app/var/lib/dpkg", "package database"}}},
		{"systemd", []File{{"personas/app/lib/systemd/systemd", exe}},
			[]v{{"personas/app/lib/systemd/systemd", "another init or service manager"}}},
		{"systemd dir", []File{{"personas/app/etc/systemd", dir}},
			[]v{{"personas/app/etc/systemd", "service manager configuration"}}},
		{"init", []File{{"personas/app/sbin/init", exe}},
			[]v{{"personas/app/sbin/init", "another init or service manager"}}},
		{"supervisord", []File{{"personas/app/usr/bin/supervisord", exe}},
			[]v{{"personas/app/usr/bin/supervisord", "another init or service manager"}}},
		{"runit", []File{{"personas/app/sbin/runit", exe}},
			[]v{{"personas/app/sbin/runit", "another init or service manager"}}},
		{"s6-svscan", []File{{"personas/app/bin/s6-svscan", exe}},
			[]v{{"personas/app/bin/s6-svscan", "another init or service manager"}}},
		{"init outside persona", []File{{"bin/init", exe}},
			[]v{{"bin/init", "another init or service manager"}}},
		{"setuid", []File{{"personas/app/bin/su", exe | fs.ModeSetuid}},
			[]v{{"personas/app/bin/su", "setuid"}}},
		{"setgid", []File{{"personas/app/bin/wall", exe | fs.ModeSetgid}},
			[]v{{"personas/app/bin/wall", "setgid"}}},
		{"setgid dir", []File{{"personas/app/shared", dir | fs.ModeSetgid}},
			[]v{{"personas/app/shared", "setgid"}}},
		{"char device", []File{{"dev/null", fs.ModeDevice | fs.ModeCharDevice | 0o666}},
			[]v{{"dev/null", "device node"}, {"dev/null", "mount point must be empty"}, {"dev/null", "world-writable"}}},
		{"block device in persona", []File{{"personas/app/sda", fs.ModeDevice | 0o600}},
			[]v{{"personas/app/sda", "device node"}}},
		{"named pipe", []File{{"personas/app/fifo", fs.ModeNamedPipe | 0o600}},
			[]v{{"personas/app/fifo", "named pipe"}}},
		{"socket", []File{{"personas/app/sock", fs.ModeSocket | 0o600}},
			[]v{{"personas/app/sock", "socket"}}},
		{"world-writable file", []File{{"personas/app/bin/open", 0o777}},
			[]v{{"personas/app/bin/open", "world-writable"}}},
		{"world-writable dir", []File{{"personas/app/tmp", fs.ModeDir | fs.ModeSticky | 0o777}},
			[]v{{"personas/app/tmp", "world-writable"}}},
		{"etc other", []File{{"etc/hosts", file}},
			[]v{{"etc/hosts", "writable configuration or state path"}}},
		{"var", []File{{"var", dir}, {"var/log", dir}},
			[]v{{"var", "writable configuration or state path"}, {"var/log", "writable configuration or state path"}}},
		{"home", []File{{"home", dir}},
			[]v{{"home", "writable configuration or state path"}}},
		{"stray top level", []File{{"lib", dir}},
			[]v{{"lib", "not part of the Spine layout"}}},
		{"stray file beside the kernel", []File{{"boot", dir}, {"boot/vmlinuz", file}, {"boot/grub.cfg", file}},
			[]v{{"boot/grub.cfg", "not part of the Spine layout"}}},
		{"kernel not a file", []File{{"boot", dir}, {"boot/vmlinuz", dir}},
			[]v{{"boot/vmlinuz", "must be a regular file"}}},
		{"mount point not empty", []File{{"persist/app", dir}},
			[]v{{"persist/app", "mount point must be empty"}}},
		{"unreferenced persona", []File{{"personas/ghost", dir}, {"personas/ghost/bin", dir}, {"personas/ghost/bin/x", exe}},
			[]v{{"personas/ghost", "persona tree that the policy does not reference"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Check(append(cleanTree(), tc.extra...), reader(cleanContents))
			for _, w := range tc.want {
				if !contains(got, w) {
					t.Errorf("missing %v in %v", w, got)
				}
			}
			for _, g := range got {
				if !contains(tc.want, g) && g.Rule != "not part of the Spine layout" {
					t.Errorf("unexpected %v", g)
				}
			}
		})
	}
}

func contains(vs []Violation, v Violation) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

func TestUnreferencedOnce(t *testing.T) {
	extra := []File{{"personas/ghost", fs.ModeDir | 0o755}, {"personas/ghost/a", 0o644}, {"personas/ghost/b", 0o644}}
	got := Check(append(cleanTree(), extra...), reader(cleanContents))
	want := []Violation{{"personas/ghost", "persona tree that the policy does not reference"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestSpecialFiles(t *testing.T) {
	for _, tc := range []struct {
		name     string
		files    []File
		contents map[string]string
		want     Violation
	}{
		{"fault marker", cleanTree(), map[string]string{"etc/spine/policy.json": testPolicy, "bin/bay0": "\x7fELF...." + FaultMarker + "...."},
			Violation{"bin/bay0", "bay0 is a test build with fault injection"}},
		{"no bay0", cleanTree(), map[string]string{"etc/spine/policy.json": testPolicy}, Violation{"bin/bay0", ""}},
		{"no policy", cleanTree(), map[string]string{"bin/bay0": "bay0"}, Violation{"etc/spine/policy.json", ""}},
		{"bad policy", cleanTree(), map[string]string{"bin/bay0": "bay0", "etc/spine/policy.json": strings.Replace(testPolicy, `"name"`, `"bogus": 1, "name"`, 1)},
			Violation{"etc/spine/policy.json", ""}},
		{"bay0 dir", replaced("bin/bay0", fs.ModeDir|0o755), cleanContents, Violation{"bin/bay0", "must be a regular file"}},
		{"persona-init dir", replaced("bin/persona-init", fs.ModeDir|0o755), cleanContents, Violation{"bin/persona-init", "must be a regular file"}},
		{"policy symlink", replaced("etc/spine/policy.json", fs.ModeSymlink|0o777), cleanContents,
			Violation{"etc/spine/policy.json", "must be a regular file"}},
		{"etc a file", replaced("etc", 0o644), cleanContents, Violation{"etc", "must be a directory"}},
		{"tmp a file", replaced("tmp", 0o644), cleanContents, Violation{"tmp", "mount point must be a directory"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Check(tc.files, reader(tc.contents))
			found := false
			for _, g := range got {
				found = found || g.Path == tc.want.Path && strings.HasPrefix(g.Rule, tc.want.Rule)
			}
			if !found {
				t.Errorf("no %v in %v", tc.want, got)
			}
		})
	}
}

// TestDir audits a real directory holding one instance of every kind of breach at once:
// every one is listed, in path order, and nothing else.
func TestDir(t *testing.T) {
	root := t.TempDir()
	mk := func(rel string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if mode.IsDir() {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(p, []byte(cleanContents[rel]), 0o644); err != nil {
			t.Fatal(err)
		}
		// Chmod after creation: the umask must not hide world-writable bits.
		if err := os.Chmod(p, mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range cleanTree()[1:] {
		if f.Mode.Type() == fs.ModeSymlink {
			if err := os.Symlink("sh", filepath.Join(root, f.Path)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		mk(f.Path, f.Mode)
	}
	if v := Check(mustDir(t, root), DirReader(root)); len(v) != 0 {
		t.Fatalf("clean directory has violations: %v", v)
	}

	mk("bin/sh", 0o755)
	mk("personas/app/usr/bin/dpkg", 0o755)
	mk("personas/app/bin/su", 0o755|fs.ModeSetuid)
	mk("personas/app/bin/wall", 0o755|fs.ModeSetgid)
	mk("personas/app/bin/open", 0o666)
	mk("personas/ghost/x", 0o644)
	mk("etc/passwd", 0o644)
	if err := unix.Mknod(filepath.Join(root, "personas/app/null"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatalf("mknod (needs root): %v", err)
	}
	if err := unix.Mkfifo(filepath.Join(root, "personas/app/fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := Check(mustDir(t, root), DirReader(root))
	want := []Violation{
		{"bin/sh", "shell outside a persona tree"},
		{"bin/sh", "not part of the Spine layout"},
		{"etc/passwd", "writable configuration or state path"},
		{"personas/app/bin/open", "world-writable"},
		{"personas/app/bin/su", "setuid"},
		{"personas/app/bin/wall", "setgid"},
		{"personas/app/fifo", "named pipe"},
		{"personas/app/null", "device node"},
		{"personas/app/usr/bin/dpkg", "package manager"},
		{"personas/ghost", "persona tree that the policy does not reference"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("violations:\n%v\nwant\n%v", got, want)
	}
	if s := want[0].String(); s != "/bin/sh: shell outside a persona tree" {
		t.Errorf("String() = %q", s)
	}
}

func mustDir(t *testing.T, root string) []File {
	t.Helper()
	files, err := Dir(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestDirMissing(t *testing.T) {
	if _, err := Dir(filepath.Join(t.TempDir(), "nope"), nil); err == nil {
		t.Error("Dir of a missing directory succeeded")
	}
}

// Stage 1 feeds the watchdog from the walk: every entry must count as progress.
func TestDirReportsProgressPerEntry(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a/b", "a/c", "d"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	calls := 0
	files, err := Dir(root, func() { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	if calls != len(files) || len(files) != 5 {
		t.Errorf("progress called %d times for %d entries, want once per entry (5: the root, a, a/b, a/c, d)", calls, len(files))
	}
}
