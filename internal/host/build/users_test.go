package build

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/host/tree"
)

const testPasswd = `# a comment
root:x:0:0:root:/root:/bin/bash
postgres:x:104:110:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash
+nis

nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
`

const testGroup = "root:x:0:\nssl-cert:x:109:postgres\npostgres:x:110:\n"

func userTree(t *testing.T, passwd, group string) *tree.Tree {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"passwd": passwd, "group": group} {
		if body == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, "etc", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := tree.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// TestResolveUser: names come from the persona's own files, numbers need no entry, a missing
// name is an error that says where it was looked for.
func TestResolveUser(t *testing.T) {
	tr := userTree(t, testPasswd, testGroup)
	for _, tc := range []struct {
		spec     string
		uid, gid uint32
		home     string
		err      string
	}{
		{spec: "postgres", uid: 104, gid: 110, home: "/var/lib/postgresql"},
		{spec: "104", uid: 104, gid: 110, home: "/var/lib/postgresql"},
		{spec: "postgres:ssl-cert", uid: 104, gid: 109, home: "/var/lib/postgresql"},
		{spec: "postgres:7", uid: 104, gid: 7, home: "/var/lib/postgresql"},
		{spec: "1000", uid: 1000, gid: 0},
		{spec: "1000:1000", uid: 1000, gid: 1000},
		{spec: "nobody", uid: 65534, gid: 65534, home: "/nonexistent"},
		{spec: "redis", err: `user "redis": no such user in the persona's /etc/passwd`},
		{spec: "postgres:wheel", err: `group "wheel": no such group in the persona's /etc/group`},
		{spec: "70000", err: "above 65535"},
	} {
		r, err := resolveUser(tc.spec, tr)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.spec, err, tc.err)
			}
			continue
		}
		if err != nil || r.uid != tc.uid || r.gid != tc.gid || r.home != tc.home {
			t.Errorf("%s: %+v %v, want %d:%d %s", tc.spec, r, err, tc.uid, tc.gid, tc.home)
		}
	}
	if _, err := resolveUser("postgres", userTree(t, "", "")); err == nil || !strings.Contains(err.Error(), "no such user") {
		t.Errorf("a tree without /etc/passwd: %v", err)
	}
	if _, err := resolveUser("postgres", userTree(t, "postgres:x:1o4:0::/:/bin/sh\n", "")); err == nil || !strings.Contains(err.Error(), "/etc/passwd: line 1") {
		t.Errorf("a broken /etc/passwd: %v", err)
	}
}

// FuzzParseIDFile: /etc/passwd and /etc/group come from images the operator did not write.
// The parser never panics, and every entry it returns has a name.
func FuzzParseIDFile(f *testing.F) {
	f.Add([]byte(testPasswd), true)
	f.Add([]byte(testGroup), false)
	f.Add([]byte("a:b:c"), true)
	f.Fuzz(func(t *testing.T, b []byte, passwd bool) {
		es, err := parseIDFile(b, passwd)
		if err != nil {
			return
		}
		for _, e := range es {
			if e.name == "" {
				t.Errorf("entry without a name: %+v", e)
			}
		}
	})
}
