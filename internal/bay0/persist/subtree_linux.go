package persist

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// SubtreeMode is the mode of a persona's subtree: its owner's alone.
const SubtreeMode = 0o700

// Kernel interfaces for project quotas.
const (
	// fsIocFsgetxattr and fsIocFssetxattr are _IOR/_IOW('X', 31/32, struct fsxattr)
	// (include/uapi/linux/fs.h).
	fsIocFsgetxattr = 0x801c581f
	fsIocFssetxattr = 0x401c5820
	// fsXflagProjinherit: what is created in the directory takes its project id.
	fsXflagProjinherit = 0x200
	// qGetquota and qSetquota are Q_GETQUOTA and Q_SETQUOTA, prjQuota the project quota type;
	// a command is QCMD(cmd, type) = cmd<<8 | type (include/uapi/linux/quota.h).
	qGetquota = 0x800007
	qSetquota = 0x800008
	prjQuota  = 2
	// qifBlimits|qifIlimits: set both limits.
	qifLimits = 1 | 4
	// quotaBlock is the unit of if_dqblk's space limits.
	quotaBlock = 1024
	// InodeRatio is the bytes per inode of /persist (mkfs.ext4 -i): a persona's inode limit is
	// its data_size divided by it, so that the inode allotments add up as the space ones do.
	InodeRatio = 16384
)

// Subtree is a persona's directory under /persist and its hard limit.
type Subtree struct {
	// Name is the directory's name under the root: the persona's.
	Name string
	// UID and GID own it; the project id, which the kernel charges every block and inode
	// written below it to, is UID.
	UID, GID int
	// Limit is the space, in bytes, the kernel lets the project use (ext4 project quota).
	Limit int64
}

// EnsureSubtree makes root/s.Name a directory owned by s.UID:s.GID with SubtreeMode, creating
// it on first use, tags it (and, when the tag changes, everything in it) with the persona's
// project id, sets the project's hard limit, and returns its path. root must be /persist as
// Mount left it (ext4 with project quotas enforced); in a directory without project quotas
// the tag and limit fail.
//
// Every step on the subtree itself works on file descriptors opened with O_NOFOLLOW, so a
// symlink (or anything else that is not a directory) planted at root/s.Name is refused, never
// followed, and ownership is changed on the directory that was checked. If the directory
// exists with another owner or project (the persona's index in the policy changed with an
// update), everything in it is given to the persona's new ids; symlinks inside are changed
// themselves, never followed. This runs before the persona starts, so nothing moves meanwhile.
func EnsureSubtree(root string, s Subtree) (string, error) {
	name := s.Name
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("persist subtree %q: not a plain name", name)
	}
	if s.UID < 0 || s.GID < 0 || s.Limit <= 0 {
		return "", fmt.Errorf("persist subtree %q: owner %d:%d, limit %d", name, s.UID, s.GID, s.Limit)
	}
	path := filepath.Join(root, name)
	rfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", root, err)
	}
	defer unix.Close(rfd)
	if err := unix.Mkdirat(rfd, name, SubtreeMode); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", fmt.Errorf("create %s: %w", path, err)
	}
	// O_PATH would not let fchown through; O_RDONLY|O_DIRECTORY|O_NOFOLLOW fails with ELOOP
	// on a symlink and ENOTDIR on anything else that is not a directory.
	fd, err := unix.Openat(rfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open %s (a symlink or not a directory?): %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", fmt.Errorf("%s is not a directory", path)
	}
	var x fsxattr
	if err := ioctlFsxattr(fd, fsIocFsgetxattr, &x); err != nil {
		return "", fmt.Errorf("read the project of %s: %w", path, err)
	}
	projid := uint32(s.UID)
	if int(st.Uid) != s.UID || int(st.Gid) != s.GID || x.Projid != projid || x.Xflags&fsXflagProjinherit == 0 {
		if err := retag(path, s.UID, s.GID, projid); err != nil {
			return "", err
		}
	}
	if st.Mode&0o7777 != SubtreeMode {
		if err := unix.Fchmod(fd, SubtreeMode); err != nil {
			return "", fmt.Errorf("chmod %s: %w", path, err)
		}
	}
	q := ifDqblk{BHardlimit: uint64(s.Limit+quotaBlock-1) / quotaBlock, IHardlimit: uint64(max(s.Limit/InodeRatio, 16)), Valid: qifLimits}
	if err := quotactlFd(rfd, qSetquota<<8|prjQuota, projid, &q); err != nil {
		return "", fmt.Errorf("set the project quota of %s to %d bytes: %w", path, s.Limit, err)
	}
	return path, nil
}

// retag gives dir and everything below it to uid:gid and project projid; directories also
// pass the project on to what is created in them. Symlinks are changed themselves, never
// followed; other special files keep their project (they hold no blocks).
func retag(dir string, uid, gid int, projid uint32) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := unix.Lchown(p, uid, gid); err != nil {
			return fmt.Errorf("give %s to the persona: %w", p, err)
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return nil
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", p, err)
		}
		defer unix.Close(fd)
		var x fsxattr
		if err := ioctlFsxattr(fd, fsIocFsgetxattr, &x); err != nil {
			return fmt.Errorf("read the project of %s: %w", p, err)
		}
		x.Projid = projid
		if d.IsDir() {
			x.Xflags |= fsXflagProjinherit
		}
		if err := ioctlFsxattr(fd, fsIocFssetxattr, &x); err != nil {
			return fmt.Errorf("set the project of %s: %w", p, err)
		}
		return nil
	})
}

// Usage returns the space in bytes and the inodes charged to a subtree's project, and its
// space limit, as the kernel counts them; root is /persist.
func Usage(root string, projid uint32) (space, inodes uint64, limit uint64, err error) {
	rfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("open %s: %w", root, err)
	}
	defer unix.Close(rfd)
	var q ifDqblk
	if err := quotactlFd(rfd, qGetquota<<8|prjQuota, projid, &q); err != nil {
		return 0, 0, 0, fmt.Errorf("read project quota %d: %w", projid, err)
	}
	return q.CurSpace, q.CurInodes, q.BHardlimit * quotaBlock, nil
}
