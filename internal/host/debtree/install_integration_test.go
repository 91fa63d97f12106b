//go:build integration

package debtree

import (
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
