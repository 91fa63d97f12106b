package initramfs

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/bay0/kmod"
)

// testKey returns a fixed Ed25519 public key in PEM, as spine keygen writes it.
func testKey(t testing.TB, seed byte) []byte {
	t.Helper()
	pub := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize)).Public()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// fakeModules writes a small modules directory: a needs b, c is built in.
func fakeModules(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"modules.dep":          "kernel/x/a-mod.ko: kernel/y/b.ko\nkernel/y/b.ko:\nkernel/z.ko:\n",
		"modules.builtin":      "kernel/c/c.ko\n",
		"kernel/x/a-mod.ko":    "module a",
		"kernel/y/b.ko":        "module b",
		"kernel/z.ko":          "module z",
		"modules.alias":        "not copied",
		"kernel/y/unrelated.o": "not copied",
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func build(t *testing.T, s Spec) ([]byte, []Entry) {
	t.Helper()
	var buf bytes.Buffer
	if err := Build(&buf, s); err != nil {
		t.Fatal(err)
	}
	entries, err := List(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), entries
}

func entryMap(entries []Entry) map[string]Entry {
	m := make(map[string]Entry)
	for _, e := range entries {
		m[e.Name] = e
	}
	return m
}

func names(entries []Entry) []string {
	var n []string
	for _, e := range entries {
		n = append(n, e.Name)
	}
	return n
}

func TestBuildFakeKernel(t *testing.T) {
	s := Spec{
		Bay0:         []byte("\x7fELF bay0"),
		ModulesDir:   fakeModules(t),
		Release:      "9.9.9-test",
		Modules:      []string{"a_mod", "c"},
		ModuleParams: map[string]string{"b": "x=1 y=2"},
		TrustedKeys:  [][]byte{testKey(t, 1), testKey(t, 2)},
	}
	_, entries := build(t, s)
	want := []string{
		"dev", "etc", "etc/bay0", "etc/bay0/keys", "etc/bay0/keys/0.pub", "etc/bay0/keys/1.pub", "etc/bay0/modules",
		"init", "lib", "lib/modules", "lib/modules/9.9.9-test",
		"lib/modules/9.9.9-test/kernel", "lib/modules/9.9.9-test/kernel/x", "lib/modules/9.9.9-test/kernel/x/a-mod.ko",
		"lib/modules/9.9.9-test/kernel/y", "lib/modules/9.9.9-test/kernel/y/b.ko",
		"newroot", "proc", "run", "sys",
	}
	if got := names(entries); !slices.Equal(got, want) {
		t.Fatalf("entries\n%q\nwant\n%q", got, want)
	}
	m := entryMap(entries)
	if e := m["init"]; e.Mode != 0o755 || string(e.Data) != string(s.Bay0) {
		t.Errorf("init: %v", e)
	}
	if e := m["etc/bay0/keys/1.pub"]; !bytes.Equal(e.Data, s.TrustedKeys[1]) || e.Mode != 0o644 {
		t.Errorf("key 1: %v", e)
	}
	items, err := kmod.ParseLoadList(bytes.NewReader(m[LoadListPath].Data))
	if err != nil {
		t.Fatal(err)
	}
	wantItems := []kmod.LoadItem{{Path: "kernel/y/b.ko", Params: "x=1 y=2"}, {Path: "kernel/x/a-mod.ko"}}
	if !slices.Equal(items, wantItems) {
		t.Errorf("load list %+v, want %+v", items, wantItems)
	}
	for _, e := range entries {
		if e.Mode.IsDir() && e.Mode != fs.ModeDir|0o755 {
			t.Errorf("%s: mode %v", e.Name, e.Mode)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	mods := fakeModules(t)
	good := func() Spec {
		return Spec{Bay0: []byte("bay0"), ModulesDir: mods, Release: "r", Modules: []string{"a-mod"}, TrustedKeys: [][]byte{testKey(t, 1)}}
	}
	tests := []struct {
		name   string
		change func(*Spec)
		want   error
		text   string
	}{
		{"no bay0", func(s *Spec) { s.Bay0 = nil }, ErrSpec, "bay0"},
		{"no keys", func(s *Spec) { s.TrustedKeys = nil }, ErrSpec, "keys"},
		{"key not PEM", func(s *Spec) { s.TrustedKeys = [][]byte{[]byte("ssh-ed25519 AAAA")} }, ErrSpec, "key 0"},
		{"private key", func(s *Spec) {
			s.TrustedKeys = [][]byte{pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})}
		}, ErrSpec, "key 0"},
		{"two PEM blocks in one key", func(s *Spec) {
			s.TrustedKeys = [][]byte{append(testKey(t, 1), testKey(t, 2)...)}
		}, ErrSpec, "key 0"},
		{"bad release", func(s *Spec) { s.Release = "../r" }, ErrSpec, "release"},
		{"unknown module", func(s *Spec) { s.Modules = []string{"a-mod", "nosuch"} }, kmod.ErrUnknownModule, "nosuch"},
		{"params for a module not loaded", func(s *Spec) { s.ModuleParams = map[string]string{"z": "x=1"} }, ErrSpec, `"z"`},
		{"params for a builtin module", func(s *Spec) {
			s.Modules = []string{"a-mod", "c"}
			s.ModuleParams = map[string]string{"c": "x=1"}
		}, ErrSpec, `"c"`},
		{"params with a newline", func(s *Spec) { s.ModuleParams = map[string]string{"b": "x=1\ny=2"} }, ErrSpec, "parameters"},
		{"no modules.dep", func(s *Spec) { s.ModulesDir = t.TempDir() }, fs.ErrNotExist, "modules.dep"},
		{"default modules on a kernel without them", func(s *Spec) { s.Modules = nil }, kmod.ErrUnknownModule, "virtio_ring"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good()
			tt.change(&s)
			err := Build(&bytes.Buffer{}, s)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("got %v, want %v mentioning %q", err, tt.want, tt.text)
			}
		})
	}
}
