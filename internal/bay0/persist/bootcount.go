package persist

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// bootHeader starts BootFile. It is plain text on purpose: finding it in the raw partition
// would prove that /persist is not encrypted.
const bootHeader = "bay0 persist boot counter\nboots="

// maxBootFile bounds what CountBoot reads.
const maxBootFile = 256

// ParseBootCount reads the number of boots from the contents of BootFile.
func ParseBootCount(b []byte) (uint64, error) {
	rest, ok := bytes.CutPrefix(b, []byte(bootHeader))
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

// FormatBootCount renders the contents of BootFile.
func FormatBootCount(n uint64) []byte {
	return []byte(bootHeader + strconv.FormatUint(n, 10) + "\n")
}

// CountBoot adds one to the boot counter in root/BootFile and returns the new count. A
// missing file counts from zero; an unreadable one is an error, never silently reset. The
// new file is written beside the old one, synced and renamed into place, so a power cut
// leaves either count. Neither file is followed if it is a symlink.
func CountBoot(root string) (uint64, error) {
	path := filepath.Join(root, BootFile)
	var n uint64
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return 0, fmt.Errorf("open %s: %w", path, err)
	default:
		b := make([]byte, maxBootFile+1)
		k, rerr := f.Read(b)
		f.Close()
		if rerr != nil {
			return 0, fmt.Errorf("read %s: %w", path, rerr)
		}
		if n, err = ParseBootCount(b[:k]); err != nil {
			return 0, err
		}
	}
	n++
	tmp := path + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("remove %s: %w", tmp, err)
	}
	w, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return 0, fmt.Errorf("create %s: %w", tmp, err)
	}
	_, err = w.Write(FormatBootCount(n))
	if err == nil {
		err = w.Sync()
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return 0, fmt.Errorf("rename %s: %w", tmp, err)
	}
	d, err := os.Open(root)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", root, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return 0, fmt.Errorf("sync %s: %w", root, err)
	}
	return n, nil
}
