// Package kernel builds Spine's own kernel: Debian's linux-source-6.1 (Debian's patches, the
// 6.1 line) configured by the fragment spine.config over `make allnoconfig`, everything built
// in, no loadable modules. The build is reproducible (the time, user and host it records come
// from SOURCE_DATE_EPOCH and constants) and cached: a kernel is built once per machine for each
// (source version, configuration, epoch) and kept under the cache directory.
//
// A built kernel is a directory <cache>/kernel/<key>/ that appears in one rename, holding a
// marker file written last. Builders hold an exclusive lock on <cache>/kernel/build.lock, so
// concurrent callers (parallel test runs) never build twice: the others wait and then use the
// winner's directory. Nothing half-written is ever visible under the final name.
//
// The build tree, <cache>/kernel/build/, is kept: an interrupted build resumes, and a changed
// configuration rebuilds only what it changes (kbuild tracks each object's command line and
// configuration, and rebuilds an object whose record is missing). The object tree is a direct
// child of the source tree, so kbuild uses relative paths and the bytes do not depend on where
// the cache is.
package kernel

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Fragment is the configuration fragment applied over allnoconfig: the whole of what is on.
//
//go:embed spine.config
var Fragment []byte

// SourcePackage is the Debian package whose tarball is built.
const SourcePackage = "linux-source-6.1"

// SourceTarball is where SourcePackage installs the source.
const SourceTarball = "/usr/src/" + SourcePackage + ".tar.xz"

// LocalVersion is what the fragment appends to the kernel's version (CONFIG_LOCALVERSION):
// `uname -r` in the machine prints e.g. "6.1.192-spine".
const LocalVersion = "-spine"

// recipe names the build steps below; change it whenever they change what is built, so cached
// kernels built the old way are not reused.
const recipe = "allnoconfig+fragment bzImage v1"

// DefaultEpoch is the build time recorded when SOURCE_DATE_EPOCH is not set (2026-01-01, the
// same default the Makefile exports).
const DefaultEpoch = 1767225600

// Kernel is a built kernel. Paths are absolute.
type Kernel struct {
	Release string `json:"release"` // `uname -r`, e.g. "6.1.192-spine"
	Image   string `json:"image"`   // bzImage with the EFI stub: what firmware or a boot loader starts
	Vmlinux string `json:"vmlinux"` // the uncompressed ELF kernel QEMU boots directly (PVH entry)
	Config  string `json:"config"`  // the full .config both were built from
	SHA256  string `json:"sha256"`  // of Image, hex
	Source  string `json:"source"`  // source package and version, e.g. "linux-source-6.1 6.1.192-2"
}

// Names inside a built kernel directory.
const (
	imageName   = "bzImage"
	vmlinuxName = "vmlinux"
	configName  = "config"
	markerName  = "built"
)

// DefaultCacheDir returns where built kernels (and other build inputs) are kept: $SPINE_CACHE
// if set, else $XDG_CACHE_HOME/spine, else $HOME/.cache/spine.
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

// Options tune Build. The zero value builds with the installed source, the default epoch (or
// SOURCE_DATE_EPOCH) and as many jobs as CPUs.
type Options struct {
	// Epoch is the build time recorded in the kernel; 0 means SOURCE_DATE_EPOCH, else DefaultEpoch.
	Epoch int64
	// Jobs is make's -j; 0 means the number of CPUs.
	Jobs int
	// Log receives progress lines (not the compiler's output, which goes to a log file kept on
	// failure). May be nil.
	Log io.Writer
	// ExtraVersion is appended to the release (make's LOCALVERSION, e.g. ".2" gives
	// "6.1.192-spine.2"): the same source and configuration shipped as a kernel of its own,
	// told apart by `uname -r` and by its bytes. The configuration is untouched, so building
	// it after the plain kernel recompiles only the few objects that print the release and
	// relinks. Empty for the plain release.
	ExtraVersion string
}

// checkExtraVersion refuses an ExtraVersion that cannot be part of a release string.
func checkExtraVersion(s string) error {
	if len(s) > 32 || strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".+_-", r))
	}) {
		return fmt.Errorf("%w: extra version %q: want at most 32 of a-z A-Z 0-9 . + _ -", ErrConfig, s)
	}
	return nil
}

// Source describes the installed source package.
type Source struct {
	Version string // Debian version, e.g. "6.1.192-2"
	Tarball string
}

// Release is the kernel release this source builds: its upstream version plus LocalVersion.
// Build checks that the kernel's own `make kernelrelease` agrees.
func (s Source) Release() string {
	up, _, _ := strings.Cut(s.Version, "-")
	return up + LocalVersion
}

// release is what a build of s with opts reports as its release.
func (o Options) release(s Source) string { return s.Release() + o.ExtraVersion }

// Stage0 is what makes a kernel image the signed boot program: an initramfs built into the
// image and a command line built in that replaces whatever the firmware passes. Signed as a
// whole, nothing that runs before stage 0's bay0 can be changed without breaking the signature.
type Stage0 struct {
	Initramfs []byte // a plain newc archive (initramfs.Archive)
	Cmdline   string
}

// stage0Archive is where the build tree keeps the archive to build in, relative to the object
// tree (kbuild runs there, so the path is the same in every cache).
const stage0Archive = "stage0.cpio"

// fragment returns the configuration to apply over allnoconfig: Fragment, plus for a stage 0
// image the built-in initramfs and command line. noinitrd keeps the EFI stub from loading an
// initrd= file or one offered through the firmware, so the built-in archive is the only one.
func (s *Stage0) fragment() ([]byte, error) {
	if s == nil {
		return Fragment, nil
	}
	if len(s.Initramfs) == 0 {
		return nil, fmt.Errorf("%w: stage 0 needs an initramfs", ErrConfig)
	}
	if strings.ContainsAny(s.Cmdline, "\"\\\n") {
		return nil, fmt.Errorf("%w: stage 0 command line %q has a quote, backslash or newline", ErrConfig, s.Cmdline)
	}
	extra := fmt.Sprintf(`
# Stage 0: the initramfs and the command line are part of the signed image.
CONFIG_INITRAMFS_SOURCE="%s"
CONFIG_INITRAMFS_COMPRESSION_NONE=y
CONFIG_CMDLINE_BOOL=y
CONFIG_CMDLINE="%s noinitrd"
CONFIG_CMDLINE_OVERRIDE=y
`, stage0Archive, s.Cmdline)
	return append(append([]byte(nil), Fragment...), extra...), nil
}

// key names a built kernel in the cache: the source version, then a hash of everything else
// that decides its bytes.
func key(src Source, epoch int64, frag []byte, s *Stage0, extra string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%d\n", recipe, epoch)
	h.Write(frag)
	name := src.Version + "-"
	// Only when set, so the plain kernel keeps the key (and the cache entry) it always had.
	if extra != "" {
		fmt.Fprintf(h, "\nextraversion %s\n", extra)
		name += "x-"
	}
	if s != nil {
		fmt.Fprintf(h, "\ninitramfs %d\n", len(s.Initramfs))
		h.Write(s.Initramfs)
		name += "stage0-"
	}
	return name + hex.EncodeToString(h.Sum(nil))[:16]
}

// Build returns the kernel built from the installed source and Fragment, building it first if
// the cache does not hold it yet. A cached kernel costs a dpkg-query and a few stats. Building
// takes long the first time (tens of minutes on two busy cores; see the README); it needs
// linux-source-6.1 and the kernel's build dependencies (scripts/deps.sh installs them).
func Build(ctx context.Context, cacheDir string, opts Options) (Kernel, error) {
	return buildVariant(ctx, cacheDir, opts, nil)
}

// BuildStage0 returns Spine's kernel with s built in: the boot program firmware starts. It
// shares Build's cache, lock and build tree (switching the tree between the two rebuilds only
// the few objects the built-in initramfs and command line touch, and relinks).
func BuildStage0(ctx context.Context, cacheDir string, opts Options, s Stage0) (Kernel, error) {
	k, err := buildVariant(ctx, cacheDir, opts, &s)
	k.Vmlinux = "" // not kept: stage 0 is started by firmware, never directly by QEMU
	return k, err
}

func buildVariant(ctx context.Context, cacheDir string, opts Options, s0 *Stage0) (Kernel, error) {
	frag, err := s0.fragment()
	if err != nil {
		return Kernel{}, err
	}
	if err := checkExtraVersion(opts.ExtraVersion); err != nil {
		return Kernel{}, err
	}
	src, err := InstalledSource(ctx)
	if err != nil {
		return Kernel{}, err
	}
	epoch, err := opts.epoch()
	if err != nil {
		return Kernel{}, err
	}
	cacheDir, err = filepath.Abs(cacheDir)
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel: cache directory: %w", err)
	}
	base := filepath.Join(cacheDir, "kernel")
	k := key(src, epoch, frag, s0, opts.ExtraVersion)
	dir := filepath.Join(base, k)
	if kern, err := load(dir, src); err == nil {
		return kern, nil
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return Kernel{}, fmt.Errorf("kernel: create cache directory: %w", err)
	}
	unlock, err := lock(ctx, filepath.Join(base, "build.lock"), opts.Log)
	if err != nil {
		return Kernel{}, err
	}
	defer unlock()
	// Another builder may have finished while this one waited.
	if kern, err := load(dir, src); err == nil {
		return kern, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return Kernel{}, fmt.Errorf("kernel: remove incomplete %s: %w", dir, err)
	}
	if err := build(ctx, src, epoch, opts, frag, s0, filepath.Join(base, "build"), dir); err != nil {
		return Kernel{}, err
	}
	return load(dir, src)
}

// epoch resolves Options.Epoch.
func (o Options) epoch() (int64, error) {
	if o.Epoch != 0 {
		return o.Epoch, nil
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		e, err := strconv.ParseInt(s, 10, 64)
		if err != nil || e <= 0 {
			return 0, fmt.Errorf("kernel: SOURCE_DATE_EPOCH=%q is not a positive number of seconds", s)
		}
		return e, nil
	}
	return DefaultEpoch, nil
}

// load returns the kernel built in dir, or an error if dir holds no complete build.
func load(dir string, src Source) (Kernel, error) {
	marker, err := os.ReadFile(filepath.Join(dir, markerName))
	if err != nil {
		return Kernel{}, err
	}
	release, sum, ok := strings.Cut(strings.TrimSpace(string(marker)), " ")
	if !ok || release == "" || len(sum) != sha256.Size*2 {
		return Kernel{}, fmt.Errorf("kernel: bad marker in %s", dir)
	}
	return Kernel{
		Release: release,
		Image:   filepath.Join(dir, imageName),
		Vmlinux: filepath.Join(dir, vmlinuxName),
		Config:  filepath.Join(dir, configName),
		SHA256:  sum,
		Source:  SourcePackage + " " + src.Version,
	}, nil
}

// Default returns the kernel in DefaultCacheDir built with default Options, building it first if
// needed; log receives progress (may be nil).
func Default(ctx context.Context, log io.Writer) (Kernel, error) {
	cache, err := DefaultCacheDir()
	if err != nil {
		return Kernel{}, err
	}
	return Build(ctx, cache, Options{Log: log})
}

// ImageRelease reads the release (`uname -r`) from a bzImage's boot header: the kernel_version
// field points at the version string, whose first word is the release.
func ImageRelease(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("kernel image: %w", err)
	}
	defer f.Close()
	hdr := make([]byte, 0x210)
	if _, err := io.ReadFull(f, hdr); err != nil || string(hdr[0x202:0x206]) != "HdrS" {
		return "", fmt.Errorf("kernel image %s is not a bzImage (no x86 boot header)", path)
	}
	off := int64(binary.LittleEndian.Uint16(hdr[0x20e:])) + 0x200
	buf := make([]byte, 256)
	n, err := f.ReadAt(buf, off)
	if n == 0 {
		return "", fmt.Errorf("kernel image %s: read version string: %v", path, err)
	}
	version, _, _ := strings.Cut(string(buf[:n]), "\x00")
	release, _, _ := strings.Cut(version, " ")
	if release == "" || strings.ContainsFunc(release, func(r rune) bool { return r < '!' || r > '~' }) {
		return "", fmt.Errorf("kernel image %s has no readable version string", path)
	}
	return release, nil
}
