//go:build integration

package vm_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"alpinespine.org/spine/internal/host/kernel"
	"alpinespine.org/spine/internal/host/vm"
	"alpinespine.org/spine/internal/host/vm/vmtest"
)

// These tests boot the real pinned kernel under the real QEMU, with no initramfs and no
// disk: the kernel finds no root file system and panics. A missing QEMU fails them.

// realKernel returns the uncompressed kernel, preparing it on first use.
func realKernel(t *testing.T) string {
	t.Helper()
	dir, err := kernel.DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	k, err := kernel.Prepare(context.Background(), dir)
	if err != nil {
		t.Fatalf("prepare kernel: %v", err)
	}
	return k.Vmlinux
}

// TestRealPanicReboots: with panic=-1 and no pvpanic driver (it is a module, and there is
// no initramfs to load it), a panic reboots inside the same QEMU process; the third banner
// is one boot too many for MaxBoots=2.
func TestRealPanicReboots(t *testing.T) {
	t.Parallel()
	v := vmtest.Boot(t, vm.Config{Kernel: realKernel(t), MaxBoots: 2, Timeout: 90 * time.Second})
	for boot := 1; boot <= 2; boot++ {
		v.WaitFor(t, "Linux version ", 30*time.Second)
		v.WaitFor(t, "Command line: console=ttyS0 panic=-1", 30*time.Second)
		v.WaitFor(t, "Kernel panic - not syncing: VFS: Unable to mount root fs", 30*time.Second)
	}
	res := v.ExpectOutcome(t, vm.TooManyBoots)
	if res.Boots != 3 {
		t.Errorf("Boots = %d, want 3 (MaxBoots+1)", res.Boots)
	}
}

// TestRealPanicZeroHangs: a later panic=0 overrides the leading panic=-1 (Linux keeps the
// last value of a repeated parameter), so the panicked kernel hangs until Timeout.
func TestRealPanicZeroHangs(t *testing.T) {
	t.Parallel()
	v := vmtest.Boot(t, vm.Config{Kernel: realKernel(t), Cmdline: "panic=0", Timeout: 20 * time.Second})
	v.WaitFor(t, "Command line: console=ttyS0 panic=-1 panic=0", 15*time.Second)
	v.WaitFor(t, "Kernel panic - not syncing: VFS: Unable to mount root fs", 15*time.Second)
	res := v.ExpectOutcome(t, vm.TimedOut)
	if res.Boots != 1 || res.Duration < 20*time.Second {
		t.Errorf("Result = %+v, want 1 boot ended by the 20 s timeout", res)
	}
}

// TestRealDevices: the real QEMU accepts the full device set (disk, control socket, port
// forward) and a Kill, as in the power-cut tests, ends it with Outcome Killed.
func TestRealDevices(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	sock := filepath.Join(dir, "ctl.sock")
	v := vmtest.Boot(t, vm.Config{
		Kernel:    realKernel(t),
		Disk:      disk,
		CtlSocket: sock,
		Forwards:  []vm.Forward{{HostPort: port, GuestPort: 22}},
		Timeout:   60 * time.Second,
	})
	v.WaitFor(t, "Linux version ", 30*time.Second)
	for _, addr := range []struct{ network, address string }{{"unix", sock}, {"tcp", l.Addr().String()}} {
		c, err := net.Dial(addr.network, addr.address)
		if err != nil {
			t.Errorf("QEMU does not listen on %s %s: %v", addr.network, addr.address, err)
			continue
		}
		c.Close()
	}
	if res := v.Kill(t); res.Outcome != vm.Killed || res.Boots != 1 {
		t.Errorf("Kill = %+v, want Killed after 1 boot", res)
	}
}
