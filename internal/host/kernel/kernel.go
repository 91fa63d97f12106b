// Package kernel prepares the one pinned Debian kernel that Spine boots: it
// fetches the package with apt-get download, unpacks it without installing it,
// runs depmod, and extracts the uncompressed vmlinux that QEMU boots directly
// (through the PVH entry point), all inside a cache directory.
//
// A prepared kernel is a directory <cache>/<release>/ that appears in one
// rename, holding a marker file written last: a crash while preparing leaves
// at most a stray temporary directory beside it, never a half-prepared kernel.
package kernel

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The pinned kernel. Change all three together: Release is the directory name
// under /lib/modules and what `uname -r` prints in the guest.
const (
	Package = "linux-image-6.1.0-56-amd64"
	Version = "6.1.192-2"
	Release = "6.1.0-56-amd64"
)

// Names inside a prepared kernel directory.
const (
	markerName  = "prepared"
	rootName    = "root"
	vmlinuxName = "vmlinux"
)

// markerContent identifies what was prepared, so that changing the pin
// prepares again instead of trusting an older tree with the same release.
const markerContent = Package + "=" + Version + "\n"

// Kernel locates the files of a prepared kernel.
type Kernel struct {
	Release    string // kernel release, e.g. "6.1.0-56-amd64"
	Vmlinux    string // uncompressed ELF kernel; boot this in QEMU (-kernel, PVH entry)
	Vmlinuz    string // the compressed bzImage as shipped in the package
	ModulesDir string // .../lib/modules/<release>, with modules.dep and modules.builtin
}

// layout returns where the files of the kernel prepared in dir are.
func layout(dir string) Kernel {
	root := filepath.Join(dir, rootName)
	return Kernel{
		Release:    Release,
		Vmlinux:    filepath.Join(dir, vmlinuxName),
		Vmlinuz:    filepath.Join(root, "boot", "vmlinuz-"+Release),
		ModulesDir: filepath.Join(root, "lib", "modules", Release),
	}
}

// DefaultCacheDir returns where prepared kernels (and other build inputs) are
// kept: $SPINE_CACHE if set, else $XDG_CACHE_HOME/spine, else $HOME/.cache/spine.
func DefaultCacheDir() (string, error) {
	if dir := os.Getenv("SPINE_CACHE"); dir != "" {
		return dir, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("kernel: find cache directory (set SPINE_CACHE): %w", err)
	}
	return filepath.Join(base, "spine"), nil
}

// Prepare returns the pinned kernel prepared under cacheDir, preparing it
// first if needed. When the kernel is already prepared it only reads the
// marker file. Preparing needs apt-get (with current package lists),
// dpkg-deb and depmod, and takes a few seconds plus the download.
//
// Concurrent calls are safe: each prepares in its own temporary directory and
// the first rename wins; the others then use the winner's directory.
func Prepare(ctx context.Context, cacheDir string) (Kernel, error) {
	dir := filepath.Join(cacheDir, Release)
	if prepared(dir) {
		return layout(dir), nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return Kernel{}, fmt.Errorf("kernel: create cache directory: %w", err)
	}
	tmp, err := os.MkdirTemp(cacheDir, "."+Release+".tmp-")
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel: create temporary directory: %w", err)
	}
	// A no-op once tmp has been renamed into place.
	defer os.RemoveAll(tmp)
	// MkdirTemp makes it 0700; the cache is readable like any other.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return Kernel{}, fmt.Errorf("kernel: chmod temporary directory: %w", err)
	}

	if err := build(ctx, tmp); err != nil {
		return Kernel{}, err
	}
	if err := install(tmp, dir); err != nil {
		return Kernel{}, err
	}
	return layout(dir), nil
}

// prepared reports whether dir holds a fully prepared kernel of the pin.
func prepared(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, markerName))
	return err == nil && string(b) == markerContent
}

// build prepares the kernel inside dir; the marker is written last.
func build(ctx context.Context, dir string) error {
	deb, err := download(ctx, dir, Package, Version)
	if err != nil {
		return err
	}
	root := filepath.Join(dir, rootName)
	if err := run(ctx, "dpkg-deb", "dpkg", "-x", deb, root); err != nil {
		return err
	}
	// The .deb is only an input; the unpacked tree is what the cache keeps.
	if err := os.Remove(deb); err != nil {
		return fmt.Errorf("kernel: remove %s: %w", filepath.Base(deb), err)
	}
	if err := run(ctx, "depmod", "kmod", "-b", root, Release); err != nil {
		return err
	}
	k := layout(dir)
	if _, err := os.Stat(filepath.Join(k.ModulesDir, "modules.dep")); err != nil {
		return fmt.Errorf("kernel: depmod wrote no modules.dep: %w", err)
	}
	if err := extractFile(k.Vmlinuz, k.Vmlinux); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, markerName), []byte(markerContent))
}

// install renames the prepared tmp directory to dir, replacing a leftover dir
// that has no valid marker.
func install(tmp, dir string) error {
	if _, err := os.Lstat(dir); err == nil && !prepared(dir) {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("kernel: remove incomplete %s: %w", dir, err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if prepared(dir) { // another Prepare finished first
			return nil
		}
		return fmt.Errorf("kernel: move prepared kernel into place: %w", err)
	}
	return nil
}

// download fetches pkg=version into dir with apt-get and returns the .deb's path.
func download(ctx context.Context, dir, pkg, version string) (string, error) {
	apt, err := exec.LookPath("apt-get")
	if err != nil {
		return "", fmt.Errorf("kernel: apt-get not found (a Debian build host is required): %w", err)
	}
	cmd := exec.CommandContext(ctx, apt, "download", pkg+"="+version)
	cmd.Dir = dir
	// As root, apt warns that the _apt user cannot write dir; the download works anyway.
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("kernel: apt-get download %s=%s (run `apt-get update` if the package lists are missing or stale): %w\n%s",
			pkg, version, err, bytes.TrimSpace(out))
	}
	debs, err := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if err != nil {
		return "", fmt.Errorf("kernel: find downloaded package: %w", err)
	}
	if len(debs) != 1 {
		return "", fmt.Errorf("kernel: apt-get download %s=%s left %d .deb files, want 1\n%s", pkg, version, len(debs), bytes.TrimSpace(out))
	}
	return debs[0], nil
}

// run runs a host tool from the Debian package debPkg, with its output in the error.
func run(ctx context.Context, tool, debPkg string, args ...string) error {
	path, err := lookTool(tool)
	if err != nil {
		return fmt.Errorf("kernel: %s not found (install the Debian package %s): %w", tool, debPkg, err)
	}
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kernel: %s %s: %w\n%s", tool, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// lookTool finds a tool in $PATH or in the sbin directories, which are not
// in the $PATH of ordinary users but hold depmod.
func lookTool(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err == nil {
		return path, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, serr := os.Stat(p); serr == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", err
}

// extractFile writes the vmlinux inside the bzImage at src to dst, atomically.
func extractFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("kernel: open vmlinuz: %w", err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fmt.Errorf("kernel: stat vmlinuz: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-")
	if err != nil {
		return fmt.Errorf("kernel: create vmlinux: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := ExtractVmlinux(in, fi.Size(), f); err != nil {
		return fmt.Errorf("kernel: extract vmlinux from %s: %w", src, err)
	}
	return commit(f, dst, 0o644)
}

// writeFileAtomic writes data to path through a temporary file and a rename.
func writeFileAtomic(path string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return fmt.Errorf("kernel: create %s: %w", filepath.Base(path), err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("kernel: write %s: %w", filepath.Base(path), err)
	}
	return commit(f, path, 0o644)
}

// commit syncs, closes and renames the temporary file f to path. On error the
// caller removes f.
func commit(f *os.File, path string, mode os.FileMode) error {
	err := f.Chmod(mode)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("kernel: write %s: %w", filepath.Base(path), err)
	}
	return nil
}
