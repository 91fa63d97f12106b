// Package debian prepares Debian's generic kernel for the boot benchmark, the reference that
// Spine's own kernel is measured against: it fetches the pinned package with apt-get download,
// unpacks it without installing it, runs depmod, extracts the uncompressed vmlinux QEMU boots
// directly (PVH entry) with xz, and builds an initramfs whose /init (bench/modinit) loads the
// modules bay0 needs before starting bay0. Nothing outside the benchmark uses it.
//
// A prepared kernel is a directory <cache>/<release>/ that appears in one rename, holding a
// marker file written last.
package debian

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"alpinespine.org/spine/bench/kmod"
	"alpinespine.org/spine/internal/format/initramfs"
)

// The pinned kernel. Change all three together: Release is the directory name under
// /lib/modules and what `uname -r` prints in the guest.
const (
	Package = "linux-image-6.1.0-56-amd64"
	Version = "6.1.192-2"
	Release = "6.1.0-56-amd64"
)

// Paths in the initramfs Initramfs writes. bay0 is /init, as in Spine's own initramfs (so that
// its sum there is bay0's and stage 1 governs without a second start on both kernels); the
// kernel runs modinit first (Cmdline), which then execs /init.
const (
	LoadListPath = "etc/bench/modules"
	ModinitPath  = "bench/modinit"
	// Cmdline is what the kernel command line needs to run modinit before bay0.
	Cmdline = "rdinit=/" + ModinitPath
)

// markerContent identifies what was prepared, so that changing the pin prepares again.
const markerContent = Package + "=" + Version + "\n"

// Modules are what bay0 needs from Debian's kernel on QEMU's pc machine, in load order: what
// Spine's kernel has built in. Helpers the kernel would request through modprobe (xts, ecb,
// crc32c, quota_v2 for ext4's quotas) are listed, since there is no modprobe.
var Modules = []string{
	"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk", "virtio_console",
	"reed_solomon", "dm_mod", "dm_bufio", "dm_verity", "squashfs",
	"dm_crypt", "xts", "ecb",
	"crc16", "mbcache", "jbd2", "crc32c_generic", "quota_tree", "quota_v2", "ext4",
	"watchdog", "i6300esb",
	"pvpanic", "pvpanic_mmio",
	"failover", "net_failover", "virtio_net", "macvlan",
}

// moduleParams: the watchdog cannot be stopped once opened, as in Spine's kernel.
var moduleParams = map[string]string{"i6300esb": "nowayout=1"}

// Kernel locates the files of a prepared kernel.
type Kernel struct {
	Vmlinux    string // uncompressed ELF kernel (QEMU -kernel, PVH entry)
	ModulesDir string // .../lib/modules/<release>, with modules.dep
}

func layout(dir string) Kernel {
	return Kernel{
		Vmlinux:    filepath.Join(dir, "vmlinux"),
		ModulesDir: filepath.Join(dir, "root", "lib", "modules", Release),
	}
}

// Prepare returns the pinned kernel prepared under cacheDir, preparing it first if needed
// (apt-get with current package lists, dpkg-deb, depmod, xz).
func Prepare(ctx context.Context, cacheDir string) (Kernel, error) {
	dir := filepath.Join(cacheDir, Release)
	if prepared(dir) {
		return layout(dir), nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return Kernel{}, fmt.Errorf("debian: create cache directory: %w", err)
	}
	tmp, err := os.MkdirTemp(cacheDir, "."+Release+".tmp-")
	if err != nil {
		return Kernel{}, fmt.Errorf("debian: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed into place
	if err := os.Chmod(tmp, 0o755); err != nil {
		return Kernel{}, fmt.Errorf("debian: %w", err)
	}
	if err := prepare(ctx, tmp); err != nil {
		return Kernel{}, err
	}
	if _, err := os.Lstat(dir); err == nil && !prepared(dir) {
		if err := os.RemoveAll(dir); err != nil {
			return Kernel{}, fmt.Errorf("debian: remove incomplete %s: %w", dir, err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil && !prepared(dir) {
		return Kernel{}, fmt.Errorf("debian: move prepared kernel into place: %w", err)
	}
	return layout(dir), nil
}

func prepared(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "prepared"))
	return err == nil && string(b) == markerContent
}

func prepare(ctx context.Context, dir string) error {
	apt := exec.CommandContext(ctx, "apt-get", "download", Package+"="+Version)
	apt.Dir = dir
	if out, err := apt.CombinedOutput(); err != nil {
		return fmt.Errorf("debian: apt-get download %s=%s (run `apt-get update` if the package lists are missing or stale): %w\n%s",
			Package, Version, err, bytes.TrimSpace(out))
	}
	debs, _ := filepath.Glob(filepath.Join(dir, Package+"_*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("debian: apt-get download left %d .deb files, want 1", len(debs))
	}
	root := filepath.Join(dir, "root")
	if err := run(ctx, "dpkg-deb", "-x", debs[0], root); err != nil {
		return err
	}
	if err := os.Remove(debs[0]); err != nil {
		return fmt.Errorf("debian: %w", err)
	}
	if err := run(ctx, "depmod", "-b", root, Release); err != nil {
		return err
	}
	k := layout(dir)
	if err := extractVmlinux(ctx, filepath.Join(root, "boot", "vmlinuz-"+Release), k.Vmlinux); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "prepared"), []byte(markerContent), 0o644)
}

// run runs a tool (looked up in PATH and the sbin directories) with its output in the error.
func run(ctx context.Context, tool string, args ...string) error {
	p, err := exec.LookPath(tool)
	if err != nil {
		for _, d := range []string{"/usr/sbin", "/sbin"} {
			if _, serr := os.Stat(filepath.Join(d, tool)); serr == nil {
				p, err = filepath.Join(d, tool), nil
			}
		}
	}
	if err != nil {
		return fmt.Errorf("debian: %s not found: %w", tool, err)
	}
	if out, err := exec.CommandContext(ctx, p, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("debian: %s %s: %w\n%s", tool, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// xzMagic starts an xz stream header; the header is the magic, two flag bytes and the CRC32
// of the flags.
const xzMagic = "\xfd7zXZ\x00"

// ErrNoXZ means the bzImage holds no well-formed xz stream header.
var ErrNoXZ = errors.New("debian: no xz stream in vmlinuz")

// FindXZ returns the offset of the first well-formed xz stream header in b: the kernel build
// puts the compressed kernel after the real-mode setup code and the decompressor, whose bytes
// may contain the magic by chance (the header's CRC tells them apart).
func FindXZ(b []byte) (int, error) {
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte(xzMagic))
		if i < 0 {
			return 0, ErrNoXZ
		}
		h := b[off+i:]
		if len(h) >= 12 && crc32.ChecksumIEEE(h[6:8]) == uint32(h[8])|uint32(h[9])<<8|uint32(h[10])<<16|uint32(h[11])<<24 {
			return off + i, nil
		}
		off += i + 1
	}
}

// extractVmlinux decompresses the kernel inside the bzImage at src with xz (which applies the
// x86 BCJ filter the kernel build uses) into dst, and checks it is an ELF file.
func extractVmlinux(ctx context.Context, src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("debian: %w", err)
	}
	off, err := FindXZ(b)
	if err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("debian: %w", err)
	}
	defer out.Close()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "xz", "-dc", "--single-stream")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(b[off:]), out, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("debian: xz -d the kernel in %s at offset %d: %w: %s", src, off, err, bytes.TrimSpace(stderr.Bytes()))
	}
	head := make([]byte, 4)
	if _, err := out.ReadAt(head, 0); err != nil || string(head) != "\x7fELF" {
		return fmt.Errorf("debian: the kernel in %s is not an ELF file", src)
	}
	return out.Close()
}

// Initramfs writes an initramfs for Debian's kernel: bay0 as /init, modinit at ModinitPath, the
// trusted keys where bay0 reads them, and the modules of Modules with their load list.
func Initramfs(w io.Writer, k Kernel, modinit, bay0 []byte, trusted [][]byte) error {
	items, err := loadList(k.ModulesDir)
	if err != nil {
		return err
	}
	extra := []initramfs.Entry{
		{Name: ModinitPath, Mode: 0o755, Data: modinit},
		{Name: LoadListPath, Mode: 0o644, Data: kmod.FormatLoadList(items)},
	}
	for _, it := range items {
		data, err := os.ReadFile(filepath.Join(k.ModulesDir, filepath.FromSlash(it.Path)))
		if err != nil {
			return fmt.Errorf("debian: read module: %w", err)
		}
		extra = append(extra, initramfs.Entry{Name: path.Join("lib/modules", Release, it.Path), Mode: fs.FileMode(0o644), Data: data})
	}
	return initramfs.Build(w, initramfs.Spec{Bay0: bay0, TrustedKeys: trusted, Extra: extra})
}

// loadList resolves Modules against the kernel's modules.dep, dependencies first.
func loadList(modulesDir string) ([]kmod.LoadItem, error) {
	f, err := os.Open(filepath.Join(modulesDir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("debian: %w", err)
	}
	defer f.Close()
	deps, err := kmod.ParseDeps(f)
	if err != nil {
		return nil, fmt.Errorf("debian: modules.dep: %w", err)
	}
	paths, err := kmod.Resolve(deps, Modules)
	if err != nil {
		return nil, err
	}
	items := make([]kmod.LoadItem, len(paths))
	for i, p := range paths {
		items[i] = kmod.LoadItem{Path: p, Params: moduleParams[kmod.Name(p)]}
	}
	return items, nil
}
