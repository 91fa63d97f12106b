package persist

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// SubtreeMode is the mode of a persona's subtree: its owner's alone.
const SubtreeMode = 0o700

// EnsureSubtree makes root/name a directory owned by uid:gid with SubtreeMode, creating it
// on first use, and returns its path. Every step works on file descriptors opened with
// O_NOFOLLOW, so a symlink (or anything else that is not a directory) planted at root/name
// is refused, never followed, and ownership is changed on the directory that was checked.
func EnsureSubtree(root, name string, uid, gid int) (string, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("persist subtree %q: not a plain name", name)
	}
	if uid < 0 || gid < 0 {
		return "", fmt.Errorf("persist subtree %q: negative owner %d:%d", name, uid, gid)
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
	if int(st.Uid) != uid || int(st.Gid) != gid {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return "", fmt.Errorf("chown %s: %w", path, err)
		}
	}
	if st.Mode&0o7777 != SubtreeMode {
		if err := unix.Fchmod(fd, SubtreeMode); err != nil {
			return "", fmt.Errorf("chmod %s: %w", path, err)
		}
	}
	return path, nil
}
