//go:build integration

package build

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/host/squashfs"
)

// TestBuildDebianPersona builds a Spine with a persona made of a real Debian package set (tini
// and its closure, about 3 MB, downloaded into a fresh cache).
func TestBuildDebianPersona(t *testing.T) {
	ctx := context.Background()
	cfg := strings.Replace(testConfig, "exec = [\"/bin/app\"]", "exec = [\"/usr/bin/tini\", \"--\", \"/bin/app\"]", 1) +
		"debian = [\"tini\"]\n"
	_, opts := project(t, cfg)
	opts.Cache = t.TempDir()
	m, err := Build(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, s := range m.Sources {
		if s.Persona != "app" || s.Kind != "debian" {
			t.Errorf("source %+v", s)
		}
		refs = append(refs, strings.SplitN(s.Ref, "=", 2)[0])
	}
	if want := []string{"gcc-12-base", "libc6", "libgcc-s1", "tini"}; !reflect.DeepEqual(refs, want) {
		t.Errorf("sources %v, want %v", refs, want)
	}
	if _, err := os.Stat(filepath.Join(opts.Cache, "debs")); err != nil {
		t.Errorf("no package cache: %v", err)
	}
	entries, err := squashfs.List(ctx, opts.Out)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range entries {
		found = found || e.Path == "personas/app/usr/bin/tini" && e.Mode.Perm() == 0o755
		if strings.Contains(e.Path, "var/lib/dpkg") {
			t.Errorf("package database in the image: %s", e.Path)
		}
	}
	if !found {
		t.Error("tini is not in the image")
	}
}
