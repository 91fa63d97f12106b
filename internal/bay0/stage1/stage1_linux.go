package stage1

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/dm"
	"alpinespine.org/spine/internal/bay0/halt"
	"alpinespine.org/spine/internal/bay0/watchdog"
	"alpinespine.org/spine/internal/format/audit"
	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/disk"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/handoff"
	"alpinespine.org/spine/internal/format/image"
	"alpinespine.org/spine/internal/format/initramfs"
	"alpinespine.org/spine/internal/format/keys"
	"alpinespine.org/spine/internal/format/manifest"
)

// Paths inside the initramfs, as spine initramfs lays it out.
const (
	newRoot   = "/newroot"
	keyDir    = "/" + initramfs.KeysDir
	rolePath  = "/" + initramfs.RolePath
	stateName = "bay0-state"
)

// maxKernel bounds the kernel image stage 0 reads into memory.
const maxKernel = 64 << 20

// Linux is the real System.
type Linux struct {
	Log io.Writer
}

// Setup mounts the pseudo filesystems and turns SysRq off. Spine's kernel has every driver built
// in (there are no modules to load) and no SysRq at all (the switch is absent).
func (l Linux) Setup() error {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", m.dst, err)
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	// SysRq off before anything else: the serial line must carry no reboot, sync or remount
	// key (Article V §2, no debug entry points). A kernel built without SysRq has no file.
	if err := os.WriteFile("/proc/sys/kernel/sysrq", []byte("0\n"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disable sysrq: %w", err)
	}
	sysrq := "absent"
	if b, err := os.ReadFile("/proc/sys/kernel/sysrq"); err == nil {
		sysrq = strings.TrimSpace(string(b))
	}
	fmt.Fprintln(l.Log, event.New(event.SysRq).With("value", sysrq))
	return nil
}

// ArmWatchdog opens the hardware watchdog with WatchdogTimeout, to be inherited by the governor.
func (l Linux) ArmWatchdog() (Dog, error) {
	return watchdog.OpenInherited(WatchdogTimeout)
}

// TrustedKeys reads every public key baked into the initramfs.
func (l Linux) TrustedKeys() ([]ed25519.PublicKey, error) {
	paths, err := filepath.Glob(filepath.Join(keyDir, "*.pub"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	if len(paths) == 0 {
		return nil, fmt.Errorf("no keys in %s", keyDir)
	}
	return keys.LoadPublic(paths...)
}

// partition waits briefly for the disk to be probed, then finds a partition by name.
func partition(name string) (string, error) {
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var p string
		if p, err = disk.FindBlockDevice("/sys", name); err == nil {
			return p, nil
		}
	}
	return "", err
}

// OpenState opens the bay0-state partition read-write.
func (l Linux) OpenState() (bootctl.Device, error) {
	p, err := partition(stateName)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	return f, nil
}

// Mount verifies a slot and mounts it at the new root. Verification is eager: the slot is
// first mapped without restart_on_corruption and read end to end, so a bad block anywhere,
// used by a file or not, fails the slot here instead of rebooting the machine later. Only then
// is it mapped for real, with restart_on_corruption, and mounted read-only.
func (l Linux) Mount(slot int, size uint64, trusted []ed25519.PublicKey, minVersion uint64, eager bool, progress func()) (handoff.Handoff, error) {
	name := "spine-" + bootctl.SlotName(slot)
	dev, err := partition(name)
	if err != nil {
		return handoff.Handoff{}, err
	}
	f, err := os.Open(dev)
	if err != nil {
		return handoff.Handoff{}, fmt.Errorf("open %s: %w", dev, err)
	}
	defer f.Close()
	partSize, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return handoff.Handoff{}, fmt.Errorf("size of %s: %w", dev, err)
	}
	if size == 0 || size > uint64(partSize) {
		return handoff.Handoff{}, fmt.Errorf("recorded image size %d does not fit partition %s (%d bytes)", size, name, partSize)
	}
	progress()
	im, err := image.Open(f, int64(size))
	if err != nil {
		return handoff.Handoff{}, err
	}
	progress()
	m, err := im.Authenticate(trusted)
	if err != nil {
		return handoff.Handoff{}, err
	}
	if m.Version < minVersion {
		return handoff.Handoff{}, fmt.Errorf("version %d is older than min_version %d (rollback refused)", m.Version, minVersion)
	}

	if eager {
		if err := verifyEagerly(l.Log, slot, dev, name, m, progress); err != nil {
			return handoff.Handoff{}, err
		}
	}

	live := dm.Verity{Name: name, Device: dev, Manifest: m, RestartOnCorruption: true}
	node, err := dm.MapVerity(live)
	progress()
	if err != nil {
		return handoff.Handoff{}, err
	}
	if err := os.MkdirAll(newRoot, 0o755); err != nil {
		_ = dm.Remove(name)
		return handoff.Handoff{}, fmt.Errorf("create %s: %w", newRoot, err)
	}
	if err := unix.Mount(node, newRoot, "squashfs", unix.MS_RDONLY|unix.MS_NODEV, ""); err != nil {
		_ = dm.Remove(name)
		return handoff.Handoff{}, fmt.Errorf("mount %s (squashfs): %w", node, err)
	}
	if st, err := os.Stat(filepath.Join(newRoot, "bin/bay0")); err != nil || !st.Mode().IsRegular() {
		_ = unix.Unmount(newRoot, 0)
		_ = dm.Remove(name)
		return handoff.Handoff{}, errors.New("the Spine has no /bin/bay0")
	}
	progress()
	if err := auditRoot(newRoot, progress); err != nil {
		_ = unix.Unmount(newRoot, 0)
		_ = dm.Remove(name)
		return handoff.Handoff{}, err
	}
	return handoff.Handoff{Slot: slot, Manifest: m}, nil
}

// verifyEagerly maps the slot without restart_on_corruption and reads it end to end, so a bad
// block anywhere, used by a file or not, fails the slot instead of rebooting the machine later.
func verifyEagerly(log io.Writer, slot int, dev, name string, m manifest.Manifest, progress func()) error {
	check := dm.Verity{Name: name + "-check", Device: dev, Manifest: m}
	progress()
	node, err := dm.MapVerity(check)
	progress()
	if err != nil {
		return err
	}
	start := time.Now()
	n, err := readAll(node, progress)
	_ = dm.Remove(check.Name)
	if err != nil {
		return fmt.Errorf("eager verification: %w", err)
	}
	if n != int64(m.DataBlocks)*int64(m.DataBlockSize) {
		return fmt.Errorf("eager verification read %d bytes, want %d", n, m.DataBlocks*uint64(m.DataBlockSize))
	}
	fmt.Fprintf(log, "bay0: stage1: slot %s: %d blocks verified in %s\n", bootctl.SlotName(slot), m.DataBlocks, time.Since(start).Round(time.Millisecond))
	return nil
}

// auditRoot applies the builder's audit to the mounted Spine. A signature proves who built a
// Spine, not that the build obeyed the constitution: one forced past the audit (a shell, a
// second init, writable configuration, a persona tree nothing governs) is refused here like a
// damaged one, and the boot law moves on.
func auditRoot(root string, progress func()) error {
	// The walk reads every inode of the Spine through the verity device: on a big Spine and a
	// slow machine that takes seconds, each entry of which is progress.
	files, err := audit.Dir(root, progress)
	if err != nil {
		return fmt.Errorf("audit the Spine: %w", err)
	}
	v := audit.Tree(files, func(rel string) ([]byte, error) { return os.ReadFile(filepath.Join(root, rel)) })
	if len(v) == 0 {
		return nil
	}
	var list []string
	for i, x := range v {
		if i == 16 {
			list = append(list, fmt.Sprintf("%d more", len(v)-i))
			break
		}
		list = append(list, x.String())
	}
	return fmt.Errorf("the Spine breaks the constitution: %s", strings.Join(list, "; "))
}

// readAll reads a device end to end with large reads, calling progress after each; a verity
// mismatch surfaces as EIO.
func readAll(p string, progress func()) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := f.Read(buf)
		n += int64(k)
		progress()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("read %s at byte %d (block %d): %w", p, n, n/4096, err)
		}
	}
}

// SwitchRoot writes the handoff, moves the pseudo filesystems into the new root, frees the
// initramfs, makes the new root / and execs its bay0 as the governor, or returns
// ErrGovernHere if that bay0 is this binary.
func (l Linux) SwitchRoot(h handoff.Handoff) error {
	// The initramfs's word on its own bay0 is read before the initramfs is freed. The
	// initramfs is as trusted as the binary beside it: it is what the kernel started.
	sum, err := os.ReadFile("/" + initramfs.Bay0SumPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", initramfs.Bay0SumPath, err)
	}
	here := GovernsHere(string(sum), h.Manifest.Bay0SHA256)
	run := filepath.Join(newRoot, "run")
	if err := unix.Mount("tmpfs", run, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=16m"); err != nil {
		return fmt.Errorf("mount %s: %w", run, err)
	}
	if err := handoff.Write(newRoot, h); err != nil {
		return err
	}
	for _, d := range []string{"/dev", "/proc", "/sys"} {
		if err := unix.Mount(d, filepath.Join(newRoot, d), "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s into the new root: %w", d, err)
		}
	}
	freeInitramfs()
	if err := unix.Chdir(newRoot); err != nil {
		return fmt.Errorf("chdir %s: %w", newRoot, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move new root to /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	if here {
		fmt.Fprintf(l.Log, "bay0: stage1: /bin/bay0 of the Spine is this bay0 (sha256 %s): governing without starting it again\n", h.Manifest.Bay0SHA256)
		// As the exec would: kernel command line words reach init as its environment.
		os.Clearenv()
		return ErrGovernHere
	}
	return unix.Exec("/bin/bay0", []string{"/bin/bay0", "governor"}, []string{})
}

// GovernsHere reports whether the running bay0, whose sha256 its initramfs gives as
// initramfsSum (hex, maybe newline-ended; "" if it gives none), is the Spine's /bin/bay0,
// whose sha256 the signed manifest gives as manifestSum ("" in a Spine built before the field).
func GovernsHere(initramfsSum, manifestSum string) bool {
	s := strings.TrimSuffix(initramfsSum, "\n")
	return len(manifestSum) == 64 && s == manifestSum
}

// Role reads the initramfs's role file; its absence means plain stage 1.
func (l Linux) Role() (initramfs.Role, error) {
	b, err := os.ReadFile(rolePath)
	if errors.Is(err, os.ErrNotExist) {
		return initramfs.RoleStage1, nil
	}
	if err != nil {
		return "", err
	}
	return initramfs.ParseRole(b)
}

// StartKernel loads the mounted slot's kernel and an initramfs for it into the kernel with
// kexec_file_load, then reboots into it. The kernel is read from the verified Spine (dm-verity
// checks every block read) and must also have the hash the signed manifest names. The new
// initramfs holds the slot's own bay0 as /init, so everything before the governor comes from
// the slot. The hardware watchdog keeps running across the jump: a slot kernel that hangs is
// reset, and the try stage 0 counted is used up.
func (l Linux) StartKernel(h handoff.Handoff, trusted [][]byte) error {
	name := bootctl.SlotName(h.Slot)
	if h.Manifest.KernelSHA256 == "" {
		return errors.New("the Spine carries no kernel")
	}
	kernelPath := filepath.Join(newRoot, manifest.KernelPath)
	kernel, err := readBounded(kernelPath, maxKernel)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(kernel)
	if got := hex.EncodeToString(sum[:]); got != h.Manifest.KernelSHA256 {
		return fmt.Errorf("%s has sha256 %s, the manifest says %s", manifest.KernelPath, got, h.Manifest.KernelSHA256)
	}
	bay0, err := readBounded(filepath.Join(newRoot, "bin/bay0"), maxKernel)
	if err != nil {
		return err
	}
	var initrd bytes.Buffer
	// Uncompressed: it only crosses memory, and gzip of a 5 MB bay0 would cost stage 0 a second
	// under TCG and the slot kernel another to undo.
	// The sum from the signed manifest: bay0 was read from the verified Spine it describes, and
	// hashing 5 MB again would cost stage 0 a fifth of a second under TCG.
	if err := initramfs.Archive(&initrd, initramfs.Spec{Bay0: bay0, Bay0SHA256: h.Manifest.Bay0SHA256, TrustedKeys: trusted, Role: initramfs.SlotRole(name)}); err != nil {
		return err
	}
	kf, err := memfd("kernel", kernel)
	if err != nil {
		return err
	}
	defer kf.Close()
	inf, err := memfd("initramfs", initrd.Bytes())
	if err != nil {
		return err
	}
	defer inf.Close()
	if err := unix.KexecFileLoad(int(kf.Fd()), int(inf.Fd()), kernelCmdline, 0); err != nil {
		return fmt.Errorf("kexec_file_load: %w", err)
	}
	fmt.Fprintf(l.Log, "bay0: stage1: starting the kernel of slot %s (%s, sha256 %s)\n", name, h.Manifest.Kernel, h.Manifest.KernelSHA256)
	fmt.Fprintln(l.Log, event.New(event.KernelStart).With("slot", name).With("release", h.Manifest.Kernel).With("sha256", h.Manifest.KernelSHA256))
	return halt.StartLoadedKernel()
}

// kernelCmdline is the command line of every slot kernel: the serial console and nothing
// else. It is part of stage 0, which the firmware verified; the reboot on panic and the rest
// are the kernel's own configuration.
const kernelCmdline = "console=ttyS0"

// readBounded reads a whole file of at most limit bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// memfd returns a memory file holding data: kexec_file_load takes files, not buffers, and the
// initramfs stage 0 writes has no other place to live.
func memfd(name string, data []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, fmt.Errorf("write memfd %s: %w", name, err)
	}
	return f, nil
}

// freeInitramfs deletes the initramfs's files (keys, this binary) so their memory is
// returned; the new root is a mount point and is left alone.
func freeInitramfs() {
	entries, err := os.ReadDir("/")
	if err != nil {
		return
	}
	var root unix.Stat_t
	if unix.Stat("/", &root) != nil {
		return
	}
	for _, e := range entries {
		p := "/" + e.Name()
		var st unix.Stat_t
		if p == newRoot || unix.Lstat(p, &st) != nil || st.Dev != root.Dev {
			continue
		}
		_ = os.RemoveAll(p)
	}
}
