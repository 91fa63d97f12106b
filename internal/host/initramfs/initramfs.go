// Package initramfs builds bay0's initramfs: a gzip-compressed newc cpio
// archive holding bay0 as /init, the kernel modules it loads, their load list
// and the trusted public keys, and nothing else (no shell, no libc, no tools).
//
// The output is reproducible: the same Spec and kernel files give the same
// bytes. Layout:
//
//	dev/ proc/ sys/ run/ newroot/           empty mount points
//	init                                    bay0 (0755)
//	etc/bay0/modules                        load list (kmod.FormatLoadList), dependencies first
//	etc/bay0/keys/0.pub, 1.pub, ...         trusted keys, PEM
//	lib/modules/<release>/kernel/...ko      the modules of the load list
package initramfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"

	"alpinespine.org/spine/internal/bay0/kmod"
)

// Paths inside the initramfs.
const (
	InitPath     = "init"
	LoadListPath = "etc/bay0/modules"
	KeysDir      = "etc/bay0/keys"
	ModulesRoot  = "lib/modules"
)

// ErrSpec means a Spec cannot be built into an initramfs.
var ErrSpec = errors.New("initramfs: bad spec")

// Spec is what goes into an initramfs.
type Spec struct {
	Bay0       []byte // static bay0 binary, installed as /init
	ModulesDir string // the kernel's /lib/modules/<release> on the build host (kernel.Kernel.ModulesDir)
	Release    string // kernel release, the directory name under lib/modules

	// Modules names the modules to load ('-' or '_'); their dependencies
	// are added. Modules built into the kernel are dropped silently; a name
	// the kernel does not know is an error. Nil means DefaultModules, and
	// then a nil ModuleParams means DefaultModuleParams.
	Modules []string
	// ModuleParams maps a module name to its parameters, e.g.
	// "i6300esb": "nowayout=1". Each must name a module being loaded.
	ModuleParams map[string]string

	TrustedKeys [][]byte // PEM "PUBLIC KEY" blocks, installed as etc/bay0/keys/<i>.pub; at least one
}

// DefaultModules returns the modules bay0 needs on QEMU's pc machine, in load
// order: virtio disks and console, dm-verity over SquashFS, dm-crypt with
// AES-XTS for /persist on ext4 with its project quotas (quota_v2: ext4 asks for the
// format through modprobe), the i6300esb watchdog and pvpanic, and the
// virtio network card with macvlan for personas' uplinks (harmless without a card). Crypto and
// checksum helpers the kernel would request through modprobe (xts, ecb,
// crc32c) are listed explicitly, since there is no modprobe.
func DefaultModules() []string {
	return []string{
		"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk", "virtio_console",
		"reed_solomon", "dm_mod", "dm_bufio", "dm_verity", "squashfs",
		"dm_crypt", "xts", "ecb",
		"crc16", "mbcache", "jbd2", "crc32c_generic", "quota_tree", "quota_v2", "ext4",
		"watchdog", "i6300esb",
		"pvpanic", "pvpanic_mmio",
		"failover", "net_failover", "virtio_net", "macvlan",
	}
}

// DefaultModuleParams returns the parameters of DefaultModules: the watchdog
// cannot be stopped once opened (nowayout), so a dead bay0 resets the machine.
func DefaultModuleParams() map[string]string {
	return map[string]string{"i6300esb": "nowayout=1"}
}

// Build writes the initramfs for s to w.
func Build(w io.Writer, s Spec) error {
	if err := s.validate(); err != nil {
		return err
	}
	items, err := s.loadList()
	if err != nil {
		return err
	}

	entries := make(map[string]Entry)
	dir := func(name string) {
		for ; name != "."; name = path.Dir(name) {
			entries[name] = Entry{Name: name, Mode: fs.ModeDir | 0o755}
		}
	}
	file := func(name string, mode fs.FileMode, data []byte) {
		dir(path.Dir(name))
		entries[name] = Entry{Name: name, Mode: mode, Data: data}
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "newroot", KeysDir, path.Join(ModulesRoot, s.Release)} {
		dir(d)
	}
	file(InitPath, 0o755, s.Bay0)
	file(LoadListPath, 0o644, kmod.FormatLoadList(items))
	for i, k := range s.TrustedKeys {
		file(path.Join(KeysDir, strconv.Itoa(i)+".pub"), 0o644, k)
	}
	for _, it := range items {
		data, err := os.ReadFile(filepath.Join(s.ModulesDir, filepath.FromSlash(it.Path)))
		if err != nil {
			return fmt.Errorf("initramfs: read module: %w", err)
		}
		file(path.Join(ModulesRoot, s.Release, it.Path), 0o644, data)
	}

	// Sorted names put every directory before its contents.
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	slices.Sort(names)

	// The zero gzip.Header has no name and mtime 0: nothing varies between
	// builds. (BestCompression saves 0.1% here and takes 2.5 times longer.)
	gz := gzip.NewWriter(w)
	cw := NewWriter(gz)
	for _, n := range names {
		e := entries[n]
		var err error
		if e.Mode.IsDir() {
			err = cw.AddDir(n, e.Mode)
		} else {
			err = cw.AddFile(n, e.Mode, e.Data)
		}
		if err != nil {
			return err
		}
	}
	if err := cw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("initramfs: compress: %w", err)
	}
	return nil
}

// validate checks the parts of s that need no files.
func (s Spec) validate() error {
	switch {
	case len(s.Bay0) == 0:
		return fmt.Errorf("%w: no bay0 binary", ErrSpec)
	case s.ModulesDir == "":
		return fmt.Errorf("%w: no modules directory", ErrSpec)
	case s.Release == "" || s.Release != path.Base(s.Release) || s.Release == "." || s.Release == "..":
		return fmt.Errorf("%w: bad kernel release %q", ErrSpec, s.Release)
	case len(s.TrustedKeys) == 0:
		return fmt.Errorf("%w: no trusted keys: bay0 could verify no Spine", ErrSpec)
	}
	for i, k := range s.TrustedKeys {
		block, rest := pem.Decode(k)
		if block == nil || block.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
			return fmt.Errorf("%w: trusted key %d is not one PEM \"PUBLIC KEY\" block", ErrSpec, i)
		}
	}
	return nil
}

// loadList resolves the modules of s against the kernel's modules.dep.
func (s Spec) loadList() ([]kmod.LoadItem, error) {
	names, params := s.Modules, s.ModuleParams
	if names == nil {
		names = DefaultModules()
		if params == nil {
			params = DefaultModuleParams()
		}
	}
	deps, err := readKernelFile(s.ModulesDir, "modules.dep", kmod.ParseDeps)
	if err != nil {
		return nil, err
	}
	builtin, err := readKernelFile(s.ModulesDir, "modules.builtin", kmod.ParseBuiltin)
	if err != nil {
		return nil, err
	}
	inDeps := make(map[string]bool, len(deps))
	for p := range deps {
		inDeps[kmod.Name(p)] = true
	}
	var load []string
	for _, n := range names {
		n = kmod.Name(n)
		switch {
		case inDeps[n]:
			load = append(load, n)
		case builtin[n]:
			// Built in: nothing to load.
		default:
			return nil, fmt.Errorf("%w: module %q is neither in modules.dep nor built into kernel %s", kmod.ErrUnknownModule, n, s.Release)
		}
	}
	paths, err := kmod.Resolve(deps, load)
	if err != nil {
		return nil, err
	}

	items := make([]kmod.LoadItem, len(paths))
	at := make(map[string]int, len(paths))
	for i, p := range paths {
		items[i] = kmod.LoadItem{Path: p}
		at[kmod.Name(p)] = i
	}
	for n, v := range params {
		i, ok := at[kmod.Name(n)]
		if !ok {
			return nil, fmt.Errorf("%w: parameters for module %q, which is not loaded from the initramfs", ErrSpec, n)
		}
		items[i].Params = v
	}
	for _, it := range items {
		if err := it.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSpec, err)
		}
	}
	return items, nil
}

// readKernelFile parses one of depmod's files in modulesDir.
func readKernelFile[T any](modulesDir, name string, parse func(io.Reader) (T, error)) (T, error) {
	var zero T
	f, err := os.Open(filepath.Join(modulesDir, name))
	if err != nil {
		return zero, fmt.Errorf("initramfs: %w", err)
	}
	defer f.Close()
	v, err := parse(bufio.NewReader(f))
	if err != nil {
		return zero, fmt.Errorf("initramfs: %s: %w", name, err)
	}
	return v, nil
}

// List reads an initramfs as Build writes it: a single gzip member holding a
// newc archive (see Writer for what is accepted). It is strict: anything else,
// including data after the gzip member, is an error.
func List(r io.Reader) ([]Entry, error) {
	br := bufio.NewReader(r)
	gz, err := gzip.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("%w: gzip: %v", ErrFormat, err)
	}
	gz.Multistream(false)
	b, err := io.ReadAll(io.LimitReader(gz, maxArchiveSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: gzip: %v", ErrFormat, err)
	}
	if len(b) > maxArchiveSize {
		return nil, fmt.Errorf("%w: larger than %d bytes uncompressed", ErrFormat, maxArchiveSize)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		if err == nil {
			return nil, fmt.Errorf("%w: data after the gzip stream", ErrFormat)
		}
		return nil, fmt.Errorf("initramfs: read: %w", err)
	}
	return parse(b)
}

// String describes an entry like one line of `ls -l`, for `spine inspect`.
func (e Entry) String() string {
	switch {
	case e.Mode.IsDir():
		return fmt.Sprintf("%v %s/", e.Mode, e.Name)
	case e.Mode&fs.ModeSymlink != 0:
		return fmt.Sprintf("%v %s -> %s", e.Mode, e.Name, e.Linkname)
	}
	return fmt.Sprintf("%v %s (%d bytes)", e.Mode, e.Name, len(e.Data))
}
