package persist

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// bootHeader starts each copy of the boot counter. It is plain text on purpose: finding it in
// the raw partition would prove that /persist is not encrypted.
const bootHeader = "bay0 persist boot counter\nboots="

// bootCopySize is the fixed size of each copy: a rewrite overwrites the same bytes, so once
// the copies exist, counting a boot needs no free block and no free inode.
const bootCopySize = 512

// bootCopies are the counter's two copies in bay0's root: BootFile and BootFile+".b". Each
// boot writes the copy that does not hold the newest count, so a power cut in the middle of a
// write leaves the other copy, and the count, intact.
func bootCopies(root string) [2]string {
	p := filepath.Join(root, BootFile)
	return [2]string{p, p + ".b"}
}

// ParseBootCount reads the number of boots from one copy of the counter; the number may be
// padded with zeros, and the copy with NUL bytes to its fixed size.
func ParseBootCount(b []byte) (uint64, error) {
	rest, ok := bytes.CutPrefix(bytes.TrimRight(b, "\x00"), []byte(bootHeader))
	if !ok {
		return 0, fmt.Errorf("%s: unknown format", BootFile)
	}
	rest, ok = bytes.CutSuffix(rest, []byte("\n"))
	if !ok || len(rest) == 0 || len(rest) > 20 {
		return 0, fmt.Errorf("%s: bad counter line", BootFile)
	}
	n, err := strconv.ParseUint(string(rest), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", BootFile, err)
	}
	return n, nil
}

// FormatBootCount renders one copy of the counter, padded with NUL bytes to its fixed size.
func FormatBootCount(n uint64) []byte {
	b := make([]byte, bootCopySize)
	copy(b, fmt.Sprintf("%s%020d\n", bootHeader, n))
	return b
}

// CountBoot adds one to the boot counter in root and returns the new count. A missing counter
// counts from zero; copies that exist but are both unreadable are an error, never silently
// reset. The new count overwrites, in place and synced, the copy that did not hold the
// newest count (creating it only on the first boots), so counting needs no space the
// personas could have taken. Neither copy is followed if it is a symlink.
func CountBoot(root string) (uint64, error) {
	copies := bootCopies(root)
	var counts [2]uint64
	var valid [2]bool
	var errs []error
	present := 0
	for i, p := range copies {
		b, err := readBootCopy(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return 0, err
		}
		present++
		if counts[i], err = ParseBootCount(b); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		valid[i] = true
	}
	if present > 0 && !valid[0] && !valid[1] {
		return 0, errors.Join(errs...)
	}
	// Write the copy that does not hold the newest count.
	newest, target := uint64(0), 0
	for i := range copies {
		if valid[i] && (counts[i] > newest || !valid[1-i]) {
			newest, target = counts[i], 1-i
		}
	}
	n := newest + 1
	if err := writeBootCopy(copies[target], FormatBootCount(n)); err != nil {
		return 0, err
	}
	return n, nil
}

// readBootCopy reads one copy of the counter, refusing a symlink.
func readBootCopy(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, fs.ErrNotExist
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	b := make([]byte, bootCopySize+1)
	n, err := unix.Pread(fd, b, 0)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return b[:n], nil
}

// writeBootCopy overwrites the copy at path with b from its start and syncs it. A new copy
// (the first boots) is created and its directory synced.
func writeBootCopy(path string, b []byte) error {
	created := false
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		fd, err = unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		created = true
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	_, err = unix.Pwrite(fd, b, 0)
	if err == nil {
		err = unix.Fdatasync(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if !created {
		return nil
	}
	dir, err := unix.Open(filepath.Dir(path), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", filepath.Dir(path), err)
	}
	defer unix.Close(dir)
	if err := unix.Fsync(dir); err != nil {
		return fmt.Errorf("sync %s: %w", filepath.Dir(path), err)
	}
	return nil
}
