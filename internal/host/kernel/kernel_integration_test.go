//go:build integration

package kernel

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPrepare prepares the pinned kernel in the real cache: slow the first
// time (download and unpack), fast afterwards.
func TestPrepare(t *testing.T) {
	cache, err := DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := Prepare(ctx, cache)
	if err != nil {
		t.Fatal(err)
	}
	if k.Release != Release {
		t.Errorf("Release = %q, want %q", k.Release, Release)
	}

	start := time.Now()
	again, err := Prepare(ctx, cache)
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("second Prepare took %v, want < 50ms", d)
	}
	if err != nil || again != k {
		t.Fatalf("second Prepare = %+v, %v; want %+v", again, err, k)
	}

	checkVmlinux(t, k.Vmlinux)
	if fi, err := os.Stat(k.Vmlinuz); err != nil || fi.Size() == 0 {
		t.Errorf("vmlinuz: %v", err)
	}
	dep, err := os.ReadFile(filepath.Join(k.ModulesDir, "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(dep, []byte("kernel/drivers/md/dm-verity.ko: ")) {
		t.Error("modules.dep does not list dm-verity")
	}
	if _, err := os.Stat(filepath.Join(k.ModulesDir, "modules.builtin")); err != nil {
		t.Error(err)
	}
}

// checkVmlinux checks that path is an x86-64 ELF kernel with a PVH entry note.
func checkVmlinux(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("vmlinux: %v", err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Fatalf("vmlinux is %v %v %v, want ELFCLASS64 EM_X86_64 ET_EXEC", f.Class, f.Machine, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			t.Fatalf("read note segment: %v", err)
		}
		for len(b) >= 12 {
			namesz := int(binary.LittleEndian.Uint32(b[0:]))
			descsz := int(binary.LittleEndian.Uint32(b[4:]))
			typ := binary.LittleEndian.Uint32(b[8:])
			name := b[12:min(len(b), 12+namesz)]
			if string(name) == "Xen\x00" && typ == xenElfnotePhys32Entry && descsz >= 4 {
				return
			}
			next := 12 + (namesz+3)&^3 + (descsz+3)&^3
			if next > len(b) {
				break
			}
			b = b[next:]
		}
	}
	t.Fatal("vmlinux has no Xen PHYS32_ENTRY (PVH) note: QEMU cannot boot it with -kernel")
}

func TestDownloadFailureSuggestsUpdate(t *testing.T) {
	_, err := download(context.Background(), t.TempDir(), Package, "0.0-no-such-version")
	if err == nil {
		t.Fatal("download of a missing version succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, "apt-get update") || !strings.Contains(msg, "0.0-no-such-version") {
		t.Fatalf("error lacks the hint or apt's output: %v", err)
	}
}

// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY (include/xen/interface/elfnote.h):
// the PVH entry point QEMU uses to boot an uncompressed kernel with -kernel.
const xenElfnotePhys32Entry = 18
