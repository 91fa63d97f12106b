//go:build integration

package kernel

import (
	"context"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY (include/xen/interface/elfnote.h):
// the PVH entry point QEMU uses to boot an uncompressed kernel with -kernel.
const xenElfnotePhys32Entry = 18

// builtKernel returns the kernel built in the real cache (`make unit` builds it first; a cold
// cache builds it here, which takes minutes).
func builtKernel(t *testing.T) Kernel {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	k, err := Default(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestBuild checks the built kernel: absolute paths, the release the source promises, an image
// whose recorded hash is its hash, a vmlinux QEMU can boot, and a second Build that only reads
// the cache.
func TestBuild(t *testing.T) {
	k := builtKernel(t)
	src, err := InstalledSource(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if k.Release != src.Release() || !regexp.MustCompile(`^6\.1\.\d+-spine$`).MatchString(k.Release) {
		t.Errorf("Release = %q, want %q (6.1.N-spine)", k.Release, src.Release())
	}
	for _, p := range []string{k.Image, k.Vmlinux, k.Config} {
		if !filepath.IsAbs(p) {
			t.Errorf("%q is not absolute", p)
		}
	}
	if sum, err := fileSHA256(k.Image); err != nil || sum != k.SHA256 {
		t.Errorf("image hash %s, %v; recorded %s", sum, err, k.SHA256)
	}
	if k.Source != "linux-source-6.1 "+src.Version {
		t.Errorf("Source = %q", k.Source)
	}
	checkVmlinux(t, k.Vmlinux)

	start := time.Now()
	again, err := Default(context.Background(), nil)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("cached Build took %v", d)
	}
	if err != nil || again != k {
		t.Fatalf("cached Build = %+v, %v; want %+v", again, err, k)
	}
}

// TestHardening asserts, on the .config the kernel was really built from, what the
// constitution and the own-kernel issue require. It is deliberately a second list, apart from
// spine.config: removing a line there fails here.
func TestHardening(t *testing.T) {
	k := builtKernel(t)
	b, err := os.ReadFile(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		// A dead PID 1 or an oops reboots at once; no loadable code.
		"CONFIG_PANIC_TIMEOUT": "-1", "CONFIG_PANIC_ON_OOPS": "y", "CONFIG_MODULES": "n", "CONFIG_KEXEC": "n",
		// No debug entry points (Article V §2).
		"CONFIG_MAGIC_SYSRQ": "n", "CONFIG_MAGIC_SYSRQ_SERIAL": "n", "CONFIG_DEVMEM": "n", "CONFIG_DEVPORT": "n",
		"CONFIG_PROC_KCORE": "n", "CONFIG_DEBUG_FS": "n", "CONFIG_KPROBES": "n", "CONFIG_FTRACE": "n",
		// Removed system-call surface.
		"CONFIG_IA32_EMULATION": "n", "CONFIG_X86_X32_ABI": "n", "CONFIG_COMPAT": "n", "CONFIG_IO_URING": "n",
		"CONFIG_USERFAULTFD": "n", "CONFIG_BPF_SYSCALL": "n", "CONFIG_LEGACY_VSYSCALL_NONE": "y",
		"CONFIG_MODIFY_LDT_SYSCALL": "n", "CONFIG_USELIB": "n", "CONFIG_HIBERNATION": "n",
		// Memory safety.
		"CONFIG_SECURITY_LOCKDOWN_LSM": "y", "CONFIG_STACKPROTECTOR_STRONG": "y", "CONFIG_FORTIFY_SOURCE": "y",
		"CONFIG_RANDOMIZE_BASE": "y", "CONFIG_RANDOMIZE_MEMORY": "y", "CONFIG_HARDENED_USERCOPY": "y",
		"CONFIG_SLAB_FREELIST_HARDENED": "y", "CONFIG_SLAB_FREELIST_RANDOM": "y", "CONFIG_INIT_ON_ALLOC_DEFAULT_ON": "y",
		"CONFIG_RANDOMIZE_KSTACK_OFFSET_DEFAULT": "y", "CONFIG_VMAP_STACK": "y", "CONFIG_STRICT_KERNEL_RWX": "y",
		// What bay0 needs, built in.
		"CONFIG_VIRTIO_PCI": "y", "CONFIG_VIRTIO_BLK": "y", "CONFIG_VIRTIO_CONSOLE": "y", "CONFIG_VIRTIO_NET": "y",
		"CONFIG_DM_VERITY": "y", "CONFIG_DM_CRYPT": "y", "CONFIG_CRYPTO_XTS": "y", "CONFIG_SQUASHFS": "y",
		"CONFIG_EXT4_FS": "y", "CONFIG_QUOTA": "y", "CONFIG_I6300ESB_WDT": "y", "CONFIG_WATCHDOG_NOWAYOUT": "y",
		"CONFIG_PVPANIC_PCI": "y", "CONFIG_MACVLAN": "y", "CONFIG_MEMCG": "y", "CONFIG_CGROUP_PIDS": "y",
		"CONFIG_CFS_BANDWIDTH": "y", "CONFIG_PSI": "y", "CONFIG_USER_NS": "y", "CONFIG_NET_NS": "y",
		"CONFIG_PID_NS": "y", "CONFIG_IPC_NS": "y", "CONFIG_SYSVIPC": "y", "CONFIG_POSIX_MQUEUE": "y",
		"CONFIG_SECCOMP_FILTER": "y", "CONFIG_EFI_STUB": "y", "CONFIG_PVH": "y",
	}
	for name, w := range want {
		h := cfg[name]
		if h == "" {
			h = "n"
		}
		if h != w {
			t.Errorf("%s = %s, want %s", name, h, w)
		}
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
