package tree

import (
	"archive/tar"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/format/audit"
	"alpinespine.org/spine/internal/format/policy"
)

// ent is one tar entry of a test archive.
type ent struct {
	name string
	typ  byte // tar.TypeReg when 0
	body string
	mode int64 // 0o644 when 0
	link string
}

func mkTar(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// newTree makes a tree in a fresh directory that has a sibling, "outside", standing for the
// build host: nothing may ever appear there.
func newTree(t *testing.T) (*Tree, string, string) {
	t.Helper()
	base := t.TempDir()
	dir, outside := filepath.Join(base, "tree"), filepath.Join(base, "outside")
	for _, d := range []string{dir, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, dir, outside
}

// listing renders a tree as sorted "path mode [-> target | = content]" lines.
func listing(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		line := rel + " " + info.Mode().String()
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			line += " -> " + l
		case info.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			line += " = " + string(b)
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func assertListing(t *testing.T, dir string, want ...string) {
	t.Helper()
	got := listing(t, dir)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("tree:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestApplyLayers(t *testing.T) {
	tr, dir, _ := newTree(t)
	lower := mkTar(t,
		ent{name: "./", typ: tar.TypeDir, mode: 0o755},
		ent{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		ent{name: "etc/keep", body: "keep"},
		ent{name: "etc/gone", body: "gone"},
		ent{name: "etc/replaced", body: "old"},
		ent{name: "opq/", typ: tar.TypeDir, mode: 0o755},
		ent{name: "opq/old", body: "old"},
		ent{name: "opq/sub/deep", body: "old"},
		ent{name: "usr/lib/libc.so", body: "libc", mode: 0o755},
		ent{name: "lib", typ: tar.TypeSymlink, link: "usr/lib"},
		ent{name: "bin/tool", body: "tool", mode: 0o700},
		ent{name: "bin/alias", typ: tar.TypeLink, link: "bin/tool"},
		ent{name: "dir-becomes-file/x", body: "x"},
	)
	upper := mkTar(t,
		ent{name: "etc/.wh.gone"},
		ent{name: "etc/replaced", body: "new"},
		// Written before the opaque marker of the same layer: survives it.
		ent{name: "opq/before", body: "new"},
		ent{name: "opq/.wh..wh..opq"},
		ent{name: "opq/after", body: "new"},
		// Through the lower layer's symlink, as the persona would see it.
		ent{name: "lib/libnew.so", body: "new"},
		ent{name: "dir-becomes-file", body: "file"},
		// A whiteout of something written earlier in the same layer does not hide it.
		ent{name: "same/x", body: "same"},
		ent{name: "same/.wh.x"},
		ent{name: "etc/.wh..wh.plnk.1234"},
	)
	for _, l := range [][]byte{lower, upper} {
		if err := tr.Apply(bytes.NewReader(l), Layer); err != nil {
			t.Fatal(err)
		}
	}
	assertListing(t, dir,
		"bin drwxr-xr-x",
		"bin/alias -rwxr-xr-x = tool",
		"bin/tool -rwxr-xr-x = tool",
		"dir-becomes-file -rw-r--r-- = file",
		"etc drwxr-xr-x",
		"etc/keep -rw-r--r-- = keep",
		"etc/replaced -rw-r--r-- = new",
		"lib Lrwxrwxrwx -> usr/lib",
		"opq drwxr-xr-x",
		"opq/after -rw-r--r-- = new",
		"opq/before -rw-r--r-- = new",
		"same drwxr-xr-x",
		"same/x -rw-r--r-- = same",
		"usr drwxr-xr-x",
		"usr/lib drwxr-xr-x",
		"usr/lib/libc.so -rwxr-xr-x = libc",
		"usr/lib/libnew.so -rw-r--r-- = new",
	)
}

func TestApplyNormalisesModes(t *testing.T) {
	tr, dir, _ := newTree(t)
	l := mkTar(t,
		ent{name: "d/", typ: tar.TypeDir, mode: 0o1777},
		ent{name: "private/", typ: tar.TypeDir, mode: 0o700},
		ent{name: "d/suid", body: "s", mode: 0o4755},
		ent{name: "d/sgid", body: "s", mode: 0o2711},
		ent{name: "d/ww", body: "w", mode: 0o666},
		ent{name: "d/secret", body: "x", mode: 0o600},
		ent{name: "dev/null", typ: tar.TypeChar},
		ent{name: "dev/sda", typ: tar.TypeBlock},
		ent{name: "run/fifo", typ: tar.TypeFifo},
	)
	if err := tr.Apply(bytes.NewReader(l), Layer); err != nil {
		t.Fatal(err)
	}
	assertListing(t, dir,
		"d drwxr-xr-x",
		"d/secret -rw-r--r-- = x",
		"d/sgid -rwxr-xr-x = s",
		"d/suid -rwxr-xr-x = s",
		"d/ww -rw-r--r-- = w",
		"private drwxr-xr-x",
	)
}

// TestApplyTraversal: nothing an archive says can write, link or delete outside the tree.
func TestApplyTraversal(t *testing.T) {
	for _, tc := range []struct {
		name string
		ents []ent
		err  error  // nil: applied, neutralised
		want string // a path that must exist in the tree afterwards
	}{
		{"dotdot", []ent{{name: "../escape", body: "x"}}, ErrUnsafePath, ""},
		{"dotdot inside", []ent{{name: "a/../../escape", body: "x"}}, ErrUnsafePath, ""},
		{"absolute", []ent{{name: "/abs/file", body: "x"}}, nil, "abs/file"},
		{"abs symlink then write", []ent{
			{name: "evil", typ: tar.TypeSymlink, link: "OUTSIDE"},
			{name: "evil/pwned", body: "x"},
		}, nil, "OUTSIDE/pwned"},
		{"relative symlink then write", []ent{
			{name: "a/evil", typ: tar.TypeSymlink, link: "../../../../../../../../OUTSIDE"},
			{name: "a/evil/pwned", body: "x"},
		}, nil, "OUTSIDE/pwned"},
		{"symlink chain then write", []ent{
			{name: "one", typ: tar.TypeSymlink, link: "two/.."},
			{name: "two", typ: tar.TypeSymlink, link: "/../../.."},
			{name: "one/OUTSIDE/pwned", body: "x"},
		}, nil, "OUTSIDE/pwned"},
		{"hard link dotdot", []ent{{name: "hl", typ: tar.TypeLink, link: "../outside/victim"}}, ErrUnsafePath, ""},
		{"hard link through symlink", []ent{
			{name: "evil", typ: tar.TypeSymlink, link: "OUTSIDE"},
			{name: "hl", typ: tar.TypeLink, link: "evil/victim"},
		}, fs.ErrNotExist, ""},
		{"whiteout through symlink", []ent{
			{name: "evil", typ: tar.TypeSymlink, link: "OUTSIDE"},
			{name: "evil/.wh.victim"},
			{name: "evil/.wh..wh..opq"},
		}, nil, "evil"},
		{"whiteout dotdot", []ent{{name: ".wh..."}}, ErrUnsafePath, ""},
		{"loop", []ent{
			{name: "l1", typ: tar.TypeSymlink, link: "l2"},
			{name: "l2", typ: tar.TypeSymlink, link: "l1"},
			{name: "l1/x", body: "x"},
		}, ErrLoop, ""},
		{"file as dir", []ent{{name: "f", body: "x"}, {name: "f/x", body: "x"}}, ErrNotDir, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, dir, outside := newTree(t)
			if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("host"), 0o644); err != nil {
				t.Fatal(err)
			}
			for i := range tc.ents {
				tc.ents[i].link = strings.ReplaceAll(tc.ents[i].link, "OUTSIDE", outside)
				tc.ents[i].name = strings.ReplaceAll(tc.ents[i].name, "OUTSIDE", outside)
			}
			err := tr.Apply(bytes.NewReader(mkTar(t, tc.ents...)), Layer)
			var ee *EntryError
			switch {
			case tc.err == nil && err != nil:
				t.Fatalf("Apply = %v", err)
			case tc.err != nil && (!errors.Is(err, tc.err) || !errors.As(err, &ee)):
				t.Fatalf("Apply = %v, want an EntryError wrapping %v", err, tc.err)
			}
			if tc.want != "" {
				want := strings.ReplaceAll(tc.want, "OUTSIDE", strings.TrimPrefix(outside, "/"))
				if _, err := os.Lstat(filepath.Join(dir, want)); err != nil {
					t.Errorf("%s not in the tree: %v", want, err)
				}
			}
			ents, err := os.ReadDir(outside)
			if err != nil || len(ents) != 1 || ents[0].Name() != "victim" {
				t.Fatalf("outside the tree: %v %v", ents, err)
			}
			if b, _ := os.ReadFile(filepath.Join(outside, "victim")); string(b) != "host" {
				t.Fatalf("victim changed: %q", b)
			}
			if ents, _ := os.ReadDir(filepath.Dir(dir)); len(ents) != 2 {
				t.Fatalf("beside the tree: %v", ents)
			}
		})
	}
}

// TestPlainKeepsSymlinkedDirs: in a package's data a directory entry over a symlink to a
// directory keeps the symlink, as dpkg does; in an OCI layer it replaces it, as containerd does.
func TestPlainKeepsSymlinkedDirs(t *testing.T) {
	for _, tc := range []struct {
		kind Kind
		want string
	}{{Plain, "lib Lrwxrwxrwx -> usr/lib"}, {Layer, "lib drwxr-xr-x"}} {
		tr, dir, _ := newTree(t)
		for _, l := range [][]ent{
			{{name: "usr/lib/", typ: tar.TypeDir}, {name: "lib", typ: tar.TypeSymlink, link: "usr/lib"}},
			{{name: "lib/", typ: tar.TypeDir}, {name: "lib/x.so", body: "x"}},
		} {
			if err := tr.Apply(bytes.NewReader(mkTar(t, l...)), tc.kind); err != nil {
				t.Fatal(err)
			}
		}
		got := listing(t, dir)
		if got[0] != tc.want {
			t.Errorf("kind %d: %q, want %q (tree %v)", tc.kind, got[0], tc.want, got)
		}
		if _, _, err := tr.Lookup("/lib/x.so"); err != nil {
			t.Errorf("kind %d: %v", tc.kind, err)
		}
	}
}

func TestCopyDir(t *testing.T) {
	tr, dir, outside := newTree(t)
	if err := tr.Apply(bytes.NewReader(mkTar(t,
		ent{name: "usr/lib/", typ: tar.TypeDir},
		ent{name: "lib", typ: tar.TypeSymlink, link: "/usr/lib"},
		ent{name: "etc/conf", typ: tar.TypeSymlink, link: outside + "/victim"},
	)), Layer); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	for _, f := range []struct {
		name string
		mode fs.FileMode
	}{{"lib/mine.so", 0o644}, {"etc/conf", 0o600}, {"bin/su", 0o755 | fs.ModeSetuid}} {
		p := filepath.Join(src, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f.name), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.CopyDir(src); err != nil {
		t.Fatal(err)
	}
	assertListing(t, dir,
		"bin drwxr-xr-x",
		"bin/su urwxr-xr-x = bin/su",
		"etc drwxr-xr-x",
		"etc/conf -rw------- = etc/conf",
		"lib Lrwxrwxrwx -> /usr/lib",
		"usr drwxr-xr-x",
		"usr/lib drwxr-xr-x",
		"usr/lib/mine.so -rw-r--r-- = lib/mine.so",
	)
	if b, _ := os.ReadFile(filepath.Join(outside, "victim")); string(b) != "host" {
		t.Fatalf("wrote through a symlink onto the host: %q", b)
	}
	if err := unixMkfifo(filepath.Join(src, "fifo")); err != nil {
		t.Fatal(err)
	}
	if err := tr.CopyDir(src); !errors.Is(err, ErrSpecial) || !strings.Contains(err.Error(), "named pipe") {
		t.Errorf("CopyDir with a fifo = %v", err)
	}
}

func TestLookPath(t *testing.T) {
	tr, _, _ := newTree(t)
	if err := tr.Apply(bytes.NewReader(mkTar(t,
		ent{name: "usr/bin/real", body: "x", mode: 0o755},
		ent{name: "usr/bin/data", body: "x", mode: 0o644},
		ent{name: "bin", typ: tar.TypeSymlink, link: "usr/bin"},
		ent{name: "etc/alternatives/tool", typ: tar.TypeSymlink, link: "/usr/bin/real"},
		ent{name: "usr/local/bin/tool", typ: tar.TypeSymlink, link: "/etc/alternatives/tool"},
		ent{name: "app/run.sh", body: "x", mode: 0o755},
	)), Layer); err != nil {
		t.Fatal(err)
	}
	const path = "/usr/local/bin:/usr/bin:relative:/bin"
	for _, tc := range []struct{ file, workdir, want string }{
		{"real", "", "/usr/bin/real"},
		{"tool", "", "/usr/local/bin/tool"},
		{"/bin/real", "", "/bin/real"},
		{"./run.sh", "/app", "/app/run.sh"},
		{"data", "", ""},
		{"missing", "", ""},
	} {
		got, err := tr.LookPath(tc.file, path, tc.workdir)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("LookPath(%q) = %q, %v; want %q", tc.file, got, err, tc.want)
		}
	}
}

// TestPrunePassesAudit: a tree holding everything the audit refuses by name passes it once
// pruned, and what the audit allows (a shell) stays.
func TestPrunePassesAudit(t *testing.T) {
	tr, dir, _ := newTree(t)
	ents := []ent{
		{name: "bin/sh", body: "sh", mode: 0o755},
		{name: "usr/bin/nginx", body: "nginx", mode: 0o755},
		{name: "usr/bin/dpkg-deb", body: "x", mode: 0o755},
		{name: "usr/share/doc/apt-howto", body: "docs stay"},
		{name: "sbin/init", typ: tar.TypeSymlink, link: "/lib/systemd/systemd"},
		{name: "var/lib/dpkg/status", body: "x"},
		{name: "etc/init.d/nginx", body: "x", mode: 0o755},
		{name: "opt/app/lib/systemd/x", body: "x"},
		{name: "usr/lib/systemd/system/nginx.service", body: "x"},
	}
	for n := range prunedNames {
		ents = append(ents, ent{name: "usr/bin/" + n, body: n, mode: 0o755})
	}
	for d := range prunedDirs {
		ents = append(ents, ent{name: d + "/x", body: "x"})
	}
	if err := tr.Apply(bytes.NewReader(mkTar(t, ents...)), Plain); err != nil {
		t.Fatal(err)
	}
	spine := t.TempDir()
	if err := os.MkdirAll(filepath.Join(spine, policy.TreeRoot), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir, filepath.Join(spine, policy.TreeRoot, "p")); err != nil {
		t.Fatal(err)
	}
	auditPersona := func() []audit.Violation {
		files, err := audit.Dir(spine, nil)
		if err != nil {
			t.Fatal(err)
		}
		var out []audit.Violation
		for _, v := range audit.Check(files, fakeSpine) {
			if strings.HasPrefix(v.Path, policy.TreeRoot+"/") {
				out = append(out, v)
			}
		}
		return out
	}
	if v := auditPersona(); len(v) < len(prunedNames) {
		t.Fatalf("the audit refuses only %d paths of the unpruned tree: %v", len(v), v)
	}
	tr2, err := Open(filepath.Join(spine, policy.TreeRoot, "p"))
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	removed, err := tr2.Prune()
	if err != nil {
		t.Fatal(err)
	}
	if v := auditPersona(); len(v) != 0 {
		t.Errorf("pruned tree still breaks the audit: %v", v)
	}
	for _, keep := range []string{"bin/sh", "usr/bin/nginx", "usr/share/doc/apt-howto"} {
		if _, _, err := tr2.Lookup(keep); err != nil {
			t.Errorf("%s was pruned: %v", keep, err)
		}
	}
	if !sort.StringsAreSorted(removed) || len(removed) < len(prunedNames) {
		t.Errorf("removed %v", removed)
	}
}

// fakeSpine answers the audit's reads: a policy referencing persona "p" and a plain bay0.
func fakeSpine(rel string) ([]byte, error) {
	switch rel {
	case policy.Path:
		return []byte(`{"persona":[{"name":"p","exec":["/bin/sh"],"cpus":0.1,"memory":"16MiB","pids":4}]}`), nil
	case "bin/bay0":
		return []byte("bay0"), nil
	}
	return nil, fs.ErrNotExist
}

func unixMkfifo(p string) error { return unix.Mkfifo(p, 0o600) }
