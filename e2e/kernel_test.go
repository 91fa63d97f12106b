//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/format/initramfs"
	"alpinespine.org/spine/internal/format/keys"
	"alpinespine.org/spine/internal/host/vm"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// TestKernelSurfacesGone boots Spine's kernel with the escape probe as PID 1 in its "kernel"
// mode: no persona, no seccomp filter, root with every capability and a full devtmpfs. What the
// kernel configuration removed must be gone even so: the int 0x80 and x32 entries, io_uring,
// userfaultfd, bpf, module loading and kexec_load, /dev/mem and /dev/port, /proc/kcore, SysRq
// (/proc/sysrq-trigger and the sysctl; the serial-line SysRq depends on it). kexec_file_load,
// which stage 0 needs, is refused even to root once kexec_load_disabled is set, and stays so.
// The machine powers itself off.
func TestKernelSurfacesGone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe")
	if err := goBuild(probe, "./personas/probe"); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(probe)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(filepath.Join(fx.dir, "keys0", keys.PublicFile))
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initrd.gz")
	f, err := os.Create(initrd)
	if err != nil {
		t.Fatal(err)
	}
	err = initramfs.Build(f, initramfs.Spec{Bay0: bin, TrustedKeys: [][]byte{pub}})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	v := vmtest.Boot(t, vm.Config{Kernel: fx.kernel.Vmlinux, Initrd: initrd, Cmdline: "-- kernel", Timeout: bootTimeout, Accel: fx.accel})
	done := v.WaitFor(t, "probe: kernel: done", bootTimeout)
	v.ExpectOutcome(t, vm.PoweredOff)
	// The machine runs the kernel built here, with the build identity fixed for reproducibility.
	if want := "Linux version " + fx.kernel.Release + " (spine@spine)"; !v.Saw(want) {
		t.Errorf("the console never showed %q", want)
	}
	if !strings.Contains(done, ", 0 escapes") {
		t.Errorf("the kernel still has a removed surface: %s", done)
	}
	for _, check := range []string{
		"no io_uring_setup", "no userfaultfd", "no bpf", "no finit_module", "no kexec_load", "no x32 entry",
		"no int 0x80 entry", "no /dev/mem", "no /dev/port", "no /proc/kcore", "no /proc/sysrq-trigger",
		"no /proc/sys/kernel/sysrq", "no /proc/modules", "mount /dev",
		"kexec_file_load refused once disabled", "kexec stays disabled",
	} {
		if !v.Saw("probe: kernel: " + check + ": ok") {
			t.Errorf("the probe never reported %q as ok", check)
		}
	}
}
