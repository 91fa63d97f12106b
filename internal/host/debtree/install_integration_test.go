//go:build integration

package debtree

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"alpinespine.org/spine/internal/host/tree"
)

// TestInstall downloads a real, small package set (tini and its closure: libc6, libgcc-s1,
// gcc-12-base, about 3 MB) into a fresh cache, then installs it again from the cache.
func TestInstall(t *testing.T) {
	needTools(t)
	cache := t.TempDir()
	install := func() (Result, string) {
		dir := t.TempDir()
		tr, err := tree.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		start := time.Now()
		res, err := Install(context.Background(), tr, []string{"tini"}, cache)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("installed %d packages (%d downloaded) in %s", len(res.Packages), res.Downloaded, time.Since(start).Round(time.Millisecond))
		for _, f := range []string{"/usr/bin/tini", "/lib64/ld-linux-x86-64.so.2"} {
			_, mode, err := tr.Lookup(f)
			if err != nil || !mode.IsRegular() || mode.Perm() != 0o755 {
				t.Errorf("%s: %v %v", f, mode, err)
			}
		}
		for _, absent := range []string{"/var/lib/dpkg", "/DEBIAN"} {
			if _, _, err := tr.Lookup(absent); err == nil {
				t.Errorf("%s is in the tree", absent)
			}
		}
		return res, dir
	}
	first, _ := install()
	var names []string
	for _, p := range first.Packages {
		names = append(names, p.Name)
	}
	if want := []string{"gcc-12-base", "libc6", "libgcc-s1", "tini"}; !reflect.DeepEqual(names, want) {
		t.Errorf("closure %v, want %v (Essential packages must not be pulled in)", names, want)
	}
	if first.Downloaded != len(first.Packages) {
		t.Errorf("first install downloaded %d of %d packages into an empty cache", first.Downloaded, len(first.Packages))
	}
	second, _ := install()
	if second.Downloaded != 0 || !reflect.DeepEqual(second.Packages, first.Packages) {
		t.Errorf("second install: %+v, want the same packages and no download", second)
	}
	ents, err := os.ReadDir(cache)
	if err != nil || len(ents) != len(first.Packages) {
		t.Errorf("cache holds %v (%v), want one .deb per package", ents, err)
	}
	for _, e := range ents {
		if filepath.Ext(e.Name()) != ".deb" {
			t.Errorf("stray %s in the cache", e.Name())
		}
	}
}

// TestCompilePythonReproducibly (issue 19.6): a tree with Debian's python3 gets the bytecode of
// its modules at build time, compiled by its own python3 in a chroot, hash-based, and two builds
// give the same bytes.
func TestCompilePythonReproducibly(t *testing.T) {
	needTools(t)
	cache := t.TempDir()
	build := func() (Result, map[string][]byte) {
		dir := t.TempDir()
		tr, err := tree.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		res, err := Install(context.Background(), tr, []string{"python3-minimal"}, cache)
		if err != nil {
			t.Fatal(err)
		}
		pycs := map[string][]byte{}
		err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && filepath.Ext(p) == ".pyc" {
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				st, _ := d.Info()
				if st.Mode().Perm() != 0o644 {
					t.Errorf("%s: mode %v", p, st.Mode())
				}
				pycs[p[len(dir):]] = b
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return res, pycs
	}
	res, first := build()
	if res.Bytecode == 0 || res.Bytecode != len(first) {
		t.Fatalf("Bytecode %d, %d .pyc files in the tree", res.Bytecode, len(first))
	}
	enc, ok := first["/usr/lib/python3.11/encodings/__pycache__/utf_8.cpython-311.pyc"]
	// PEP 552 flags word: 0b01 = hash-based, unchecked (check_source bit 0b10 clear).
	if !ok || len(enc) < 16 || enc[4] != 1 || enc[5]|enc[6]|enc[7] != 0 {
		t.Errorf("utf_8.pyc is missing or not an unchecked hash-based pyc: % x", enc[:min(len(enc), 16)])
	}
	_, second := build()
	if len(second) != len(first) {
		t.Fatalf("second build has %d .pyc files, the first %d", len(second), len(first))
	}
	for p, b := range first {
		if !bytes.Equal(second[p], b) {
			t.Errorf("%s differs between two builds", p)
		}
	}
	t.Logf("%d .pyc files, identical in two builds", len(first))
}
