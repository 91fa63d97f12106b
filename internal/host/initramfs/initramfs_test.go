package initramfs

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/kmod"
	"alpinespine.org/spine/internal/host/kernel"
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

// prepareKernel returns the pinned kernel from the shared cache.
func prepareKernel(t *testing.T) kernel.Kernel {
	t.Helper()
	cache, err := kernel.DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := kernel.Prepare(ctx, cache)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestBuildRealKernel builds with the pinned kernel and the default modules,
// twice, and checks the exact contents.
func TestBuildRealKernel(t *testing.T) {
	k := prepareKernel(t)
	s := Spec{Bay0: []byte("\x7fELF not really bay0"), ModulesDir: k.ModulesDir, Release: k.Release, TrustedKeys: [][]byte{testKey(t, 1)}}
	first, entries := build(t, s)
	second, _ := build(t, s)
	if !bytes.Equal(first, second) {
		t.Fatal("two builds of the same spec differ")
	}
	t.Logf("initramfs: %d bytes compressed, %d entries", len(first), len(entries))

	m := entryMap(entries)
	items, err := kmod.ParseLoadList(bytes.NewReader(m[LoadListPath].Data))
	if err != nil {
		t.Fatal(err)
	}
	var loaded []string
	for _, it := range items {
		loaded = append(loaded, kmod.Name(it.Path))
		if it.Params != "" && !(kmod.Name(it.Path) == "i6300esb" && it.Params == "nowayout=1") {
			t.Errorf("unexpected parameters %q for %s", it.Params, it.Path)
		}
	}
	if !slices.Equal(loaded, DefaultModules()) {
		t.Errorf("load list %q, want %q", loaded, DefaultModules())
	}
	if !slices.Contains(items, kmod.LoadItem{Path: "kernel/drivers/watchdog/i6300esb.ko", Params: "nowayout=1"}) {
		t.Error("i6300esb without nowayout=1")
	}

	// Exactly: the fixed directories, init, the load list, the key, each
	// module of the load list and the directories above them.
	want := map[string]bool{}
	for _, d := range []string{"dev", "proc", "sys", "run", "newroot", "etc", "etc/bay0", "etc/bay0/keys", "lib", "lib/modules", "lib/modules/" + k.Release} {
		want[d] = true
	}
	for _, f := range []string{"init", LoadListPath, "etc/bay0/keys/0.pub"} {
		want[f] = true
	}
	for _, it := range items {
		p := path.Join("lib/modules", k.Release, it.Path)
		for ; p != "."; p = path.Dir(p) {
			want[p] = true
		}
	}
	for _, e := range entries {
		if !want[e.Name] {
			t.Errorf("unexpected entry %s", e.Name)
		}
		delete(want, e.Name)
	}
	for n := range want {
		t.Errorf("missing entry %s", n)
	}

	verity := "kernel/drivers/md/dm-verity.ko"
	onDisk, err := os.ReadFile(filepath.Join(k.ModulesDir, verity))
	if err != nil {
		t.Fatal(err)
	}
	if e := m[path.Join("lib/modules", k.Release, verity)]; !bytes.Equal(e.Data, onDisk) || e.Mode != 0o644 {
		t.Errorf("dm-verity.ko: %v", e)
	}
}

// TestBootsInQEMU boots the pinned kernel with an initramfs whose /init is
// testdata/smokeinit: the modules must load and the machine power off.
func TestBootsInQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 not found (install the Debian package qemu-system-x86): %v", err)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not found: %v", err)
	}
	k := prepareKernel(t)
	dir := t.TempDir()

	initBin := filepath.Join(dir, "smokeinit")
	gobuild := exec.Command(goTool, "build", "-trimpath", "-o", initBin, "./testdata/smokeinit")
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gobuild.CombinedOutput(); err != nil {
		t.Fatalf("go build smokeinit: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(initBin)
	if err != nil {
		t.Fatal(err)
	}
	var img bytes.Buffer
	if err := Build(&img, Spec{Bay0: bin, ModulesDir: k.ModulesDir, Release: k.Release, TrustedKeys: [][]byte{testKey(t, 1)}}); err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initrd.gz")
	if err := os.WriteFile(initrd, img.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := []string{
		"-M", "pc", "-cpu", "qemu64,+rdrand", "-m", "256",
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
		"-device", "i6300esb", "-device", "pvpanic", "-action", "panic=exit-failure",
		"-kernel", k.Vmlinux, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet", "-no-reboot",
	}
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.WaitDelay = 5 * time.Second // CommandContext kills QEMU at the deadline
	var console bytes.Buffer
	cmd.Stdout = &console
	cmd.Stderr = &console
	start := time.Now()
	err = cmd.Run()
	elapsed := time.Since(start)
	out := console.String()
	t.Logf("boot to power off: %v (initramfs %d bytes)\n%s", elapsed.Round(time.Millisecond), img.Len(), out)
	fail := func(format string, a ...any) {
		t.Helper()
		t.Logf("command: %s %s", qemu, strings.Join(args, " "))
		t.Fatalf(format, a...)
	}
	if ctx.Err() != nil {
		fail("QEMU still running after 60 s")
	}
	if err != nil {
		fail("QEMU: %v", err)
	}
	for _, line := range []string{"smokeinit: hello", fmt.Sprintf("smokeinit: modules loaded (%d)", len(DefaultModules())), "(nowayout=1)"} {
		if !strings.Contains(out, line) {
			fail("console lacks %q", line)
		}
	}
	for _, bad := range []string{"Kernel panic", "smokeinit: error"} {
		if strings.Contains(out, bad) {
			fail("console shows %q", bad)
		}
	}
}
