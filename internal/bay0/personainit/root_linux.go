package personainit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/launch"
)

// scaffold is where the persona's root is assembled before pivot_root. It is a directory of
// the Spine that exists in every Spine; the tmpfs mounted on it exists only in the persona's
// mount namespace.
const scaffold = "/tmp"

// setupRoot builds the persona's root and pivots into it. The Spine is read-only, so the
// persona's tree cannot hold mount points of its own: the root is a small tmpfs holding a
// read-only bind of each top-level entry of the tree, plus /proc, /dev, /tmp, /run and /data,
// and is itself made read-only before the pivot.
func setupRoot(cfg launch.Config) error {
	// Nothing mounted here may propagate back to the governor's namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	// The tree is opened before the scaffold is mounted, which might hide it.
	tree, err := os.Open(cfg.Tree)
	if err != nil {
		return fmt.Errorf("read tree: %w", err)
	}
	defer tree.Close()
	entries, err := tree.ReadDir(-1)
	if err != nil {
		return fmt.Errorf("read tree: %w", err)
	}
	r := scaffold
	if err := unix.Mount("tmpfs", r, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=64k,nr_inodes=1024,mode=755"); err != nil {
		return fmt.Errorf("mount root tmpfs: %w", err)
	}
	treePath := fmt.Sprintf("/proc/self/fd/%d", tree.Fd())
	gen := missingEtc(treePath, etcFiles(cfg))
	hasEtc := false
	for _, e := range entries {
		if reserved(e.Name(), cfg.Data) {
			continue
		}
		src, dst := filepath.Join(treePath, e.Name()), filepath.Join(r, e.Name())
		var err error
		if e.Name() == "etc" && e.IsDir() && len(gen) > 0 {
			hasEtc = true
			err = buildEtc(src, dst, gen)
		} else {
			err = bindEntry(src, dst, e.Type())
		}
		if err != nil {
			return fmt.Errorf("tree entry %s: %w", e.Name(), err)
		}
	}
	if !hasEtc && len(gen) > 0 {
		if _, err := os.Lstat(filepath.Join(treePath, "etc")); errors.Is(err, os.ErrNotExist) {
			if err := buildEtc("", filepath.Join(r, "etc"), gen); err != nil {
				return fmt.Errorf("/etc: %w", err)
			}
		}
	}
	if err := mountAt(r, "proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return err
	}
	if err := setupDev(filepath.Join(r, "dev"), cfg.ShmSize); err != nil {
		return err
	}
	if err := mountAt(r, "tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, tmpfsData(cfg.TmpSize, 0o1777)); err != nil {
		return err
	}
	// /run is the workload's own: it belongs to the user it runs as.
	if err := mountAt(r, "run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, tmpfsData(cfg.RunSize, 0o755)+owner(cfg.User)); err != nil {
		return err
	}
	if cfg.Data {
		if err := attachData(filepath.Join(r, "data")); err != nil {
			return err
		}
	}
	if err := maskProc(filepath.Join(r, "proc")); err != nil {
		return err
	}
	if err := readOnly(r, false); err != nil {
		return err
	}
	return pivot(r)
}

// bindEntry puts one top-level entry of the tree into the root, read-only.
func bindEntry(src, dst string, t os.FileMode) error {
	switch {
	case t&os.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return fmt.Errorf("read link %s: %w", src, err)
		}
		return os.Symlink(target, dst)
	case t.IsDir():
		if err := os.Mkdir(dst, 0o755); err != nil {
			return fmt.Errorf("make mount point %s: %w", dst, err)
		}
	case t.IsRegular():
		if err := os.WriteFile(dst, nil, 0o644); err != nil {
			return fmt.Errorf("make mount point %s: %w", dst, err)
		}
	default:
		return nil // the builder never puts special files in a tree
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	return readOnly(dst, true)
}

// missingEtc keeps the files of gen that the tree's /etc lacks: the tree's own always win.
func missingEtc(tree string, gen map[string]string) map[string]string {
	out := map[string]string{}
	for name, body := range gen {
		if _, err := os.Lstat(filepath.Join(tree, "etc", name)); errors.Is(err, os.ErrNotExist) {
			out[name] = body
		}
	}
	return out
}

// buildEtc makes the persona's /etc in the root's tmpfs: each entry of the tree's /etc (src;
// "" when the tree has none) bound read-only as the top level is, beside the generated files.
// The Spine is read-only, so the files cannot be added to the tree's /etc itself; they live in
// this instance's root tmpfs, which is made read-only with the rest of the root before the
// pivot.
func buildEtc(src, dst string, gen map[string]string) error {
	if err := os.Mkdir(dst, 0o755); err != nil {
		return fmt.Errorf("make /etc: %w", err)
	}
	if src != "" {
		d, err := os.Open(src)
		if err != nil {
			return err
		}
		entries, err := d.ReadDir(-1)
		d.Close()
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := bindEntry(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()), e.Type()); err != nil {
				return fmt.Errorf("%s: %w", e.Name(), err)
			}
		}
	}
	for name, body := range gen {
		if err := os.WriteFile(filepath.Join(dst, name), []byte(body), 0o644); err != nil {
			return fmt.Errorf("write /etc/%s: %w", name, err)
		}
	}
	return nil
}

// mountAt makes root/name and mounts a fresh filesystem there.
func mountAt(root, name, fstype string, flags uintptr, data string) error {
	dst := filepath.Join(root, name)
	if err := os.Mkdir(dst, 0o755); err != nil {
		return fmt.Errorf("make mount point /%s: %w", name, err)
	}
	if err := unix.Mount(fstype, dst, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on /%s: %w", fstype, name, err)
	}
	return nil
}

// setupDev makes a minimal read-only /dev: a few harmless nodes bound from the governor's
// /dev (a user namespace cannot mknod), the usual links into /proc, and /dev/shm, a tmpfs of
// shmSize bytes for POSIX shared memory. A tmpfs's pages are charged to the memory cgroup of
// whoever writes them, the persona, so /dev/shm counts against its memory.max.
func setupDev(dev string, shmSize int64) error {
	if err := os.Mkdir(dev, 0o755); err != nil {
		return fmt.Errorf("make /dev: %w", err)
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,nr_inodes=64,mode=755"); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	for _, n := range deviceNodes() {
		dst := filepath.Join(dev, n)
		if err := os.WriteFile(dst, nil, 0o666); err != nil {
			return fmt.Errorf("make /dev/%s: %w", n, err)
		}
		if err := unix.Mount("/dev/"+n, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", n, err)
		}
	}
	for name, target := range map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
	} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return fmt.Errorf("link /dev/%s: %w", name, err)
		}
	}
	if err := mountAt(dev, "shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, tmpfsData(shmSize, 0o1777)); err != nil {
		return err
	}
	return readOnly(dev, false)
}

// attachData attaches the detached mount of the persona's data directory that the governor
// passed on launch.DataFD.
func attachData(dst string) error {
	if err := os.Mkdir(dst, 0o755); err != nil {
		return fmt.Errorf("make /data: %w", err)
	}
	if err := unix.MoveMount(launch.DataFD, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach /data: %w", err)
	}
	return unix.Close(launch.DataFD)
}

// maskProc hides and freezes the host-wide parts of a fresh /proc.
func maskProc(proc string) error {
	for _, p := range maskedPaths() {
		dst := filepath.Join(proc, p)
		var st unix.Stat_t
		if err := unix.Lstat(dst, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return fmt.Errorf("mask /proc/%s: %w", p, err)
		}
		var err error
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = unix.Mount("tmpfs", dst, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=0")
		} else {
			err = unix.Mount("/dev/null", dst, "", unix.MS_BIND, "")
		}
		if err != nil {
			return fmt.Errorf("mask /proc/%s: %w", p, err)
		}
	}
	for _, p := range readonlyPaths() {
		dst := filepath.Join(proc, p)
		if err := unix.Mount(dst, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return fmt.Errorf("bind /proc/%s: %w", p, err)
		}
		if err := readOnly(dst, true); err != nil {
			return err
		}
	}
	return nil
}

// readOnly makes the mount at path read-only, nosuid and nodev without touching the flags
// the kernel locked when it copied the governor's mounts into this user namespace.
func readOnly(path string, recursive bool) error {
	var flags uint
	if recursive {
		flags = unix.AT_RECURSIVE
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(unix.AT_FDCWD, path, flags, &attr); err != nil {
		return fmt.Errorf("make %s read-only: %w", path, err)
	}
	return nil
}

// pivot makes root the root of the mount namespace and detaches everything else, so that no
// path, fd or cwd leads back to the Spine.
func pivot(root string) error {
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("enter new root: %w", err)
	}
	// pivot_root(".", ".") stacks the old root on the new one; unmounting "." then drops it,
	// with no put_old directory needed in a read-only root.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	return nil
}
