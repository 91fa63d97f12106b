//go:build integration

package kmod

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"alpinespine.org/spine/internal/host/kernel"
)

// TestRealModules resolves the default list against the pinned kernel.
func TestRealModules(t *testing.T) {
	cache, err := kernel.DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	k, err := kernel.Prepare(context.Background(), cache)
	if err != nil {
		t.Fatal(err)
	}
	deps := readDeps(t, filepath.Join(k.ModulesDir, "modules.dep"))
	if len(deps) < 1000 {
		t.Fatalf("only %d modules in the real modules.dep", len(deps))
	}
	order, err := Resolve(deps, defaultModules)
	if err != nil {
		t.Fatal(err)
	}
	checkOrder(t, deps, order)
	var names []string
	for _, p := range order {
		names = append(names, Name(p))
		if _, err := os.Stat(filepath.Join(k.ModulesDir, p)); err != nil {
			t.Error(err)
		}
	}
	// The default list is already in load order, and needs nothing else.
	if !slices.Equal(names, defaultModules) {
		t.Fatalf("load order %q, want %q", names, defaultModules)
	}

	b, err := os.Open(filepath.Join(k.ModulesDir, "modules.builtin"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	builtin, err := ParseBuiltin(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range defaultModules {
		if builtin[n] {
			t.Errorf("%s is built in, yet in modules.dep", n)
		}
	}
}

// defaultModules is the module list of DESIGN.md (initramfs.DefaultModules).
var defaultModules = []string{
	"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk", "virtio_console",
	"reed_solomon", "dm_mod", "dm_bufio", "dm_verity", "squashfs",
	"dm_crypt", "xts", "ecb",
	"crc16", "mbcache", "jbd2", "crc32c_generic", "ext4",
	"watchdog", "i6300esb",
	"pvpanic", "pvpanic_mmio",
}
