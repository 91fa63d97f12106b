//go:build integration

package initramfs

import (
	"bytes"
	"context"
	"fmt"
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
