//go:build integration

package initramfs

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"alpinespine.org/spine/internal/host/kernel"
)

// builtKernel returns Spine's kernel from the shared cache (`make unit` builds it first).
func builtKernel(t *testing.T) kernel.Kernel {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	k, err := kernel.Default(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestBootsInQEMU boots Spine's kernel with an initramfs whose /init is testdata/smokeinit:
// with no module loaded, the watchdog is bound with nowayout and the machine powers off.
func TestBootsInQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 not found (install the Debian package qemu-system-x86): %v", err)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go not found: %v", err)
	}
	k := builtKernel(t)
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
	if err := Build(&img, Spec{Bay0: bin, TrustedKeys: [][]byte{testKey(t, 1)}}); err != nil {
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
		"-append", "console=ttyS0 quiet", "-no-reboot",
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
	for _, line := range []string{"smokeinit: hello", "smokeinit: no module support", "(nowayout=1)"} {
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
