// Package squashfs builds and lists SquashFS filesystems with Debian's squashfs-tools, set up so
// that the same tree and the same SOURCE_DATE_EPOCH give the same bytes.
package squashfs

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Make builds a SquashFS at out from the directory tree dir. Timestamps are set to epoch, every
// file is owned by root and extended attributes are dropped, so only names, modes and contents
// reach the image; mksquashfs sorts directory entries itself.
func Make(ctx context.Context, dir, out string, epoch int64) error {
	if _, err := exec.LookPath("mksquashfs"); err != nil {
		return fmt.Errorf("mksquashfs not found (apt-get install squashfs-tools): %w", err)
	}
	e := strconv.FormatInt(epoch, 10)
	cmd := exec.CommandContext(ctx, "mksquashfs", dir, out,
		"-noappend", "-reproducible", "-all-root", "-no-xattrs",
		"-mkfs-time", e, "-all-time", e,
		"-comp", "gzip", "-b", "131072",
		"-quiet", "-no-progress")
	// mksquashfs refuses SOURCE_DATE_EPOCH together with -mkfs-time/-all-time, and the caller's
	// environment (spine build under SOURCE_DATE_EPOCH) usually has it: epoch already carries it.
	cmd.Env = withoutEnv(os.Environ(), "SOURCE_DATE_EPOCH")
	if o, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mksquashfs %s: %w: %s", dir, err, bytes.TrimSpace(o))
	}
	return nil
}

// withoutEnv returns env without the variable key.
func withoutEnv(env []string, key string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k != key {
			out = append(out, kv)
		}
	}
	return out
}

// Entry is one file of a SquashFS listing.
type Entry struct {
	Path   string // relative, no leading slash; "" is the root
	Mode   fs.FileMode
	Size   int64
	Target string // symlink target
}

// List lists a SquashFS (an image file works too: the filesystem starts at offset 0).
func List(ctx context.Context, img string) ([]Entry, error) {
	cmd := exec.CommandContext(ctx, "unsquashfs", "-lln", "-UTC", img)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("unsquashfs -lln %s: %w: %s", img, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return ParseListing(bytes.NewReader(out))
}

// Cat returns the contents of one file in a SquashFS.
func Cat(ctx context.Context, img, path string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, "unsquashfs", "-cat", img, path).Output()
	if err != nil {
		return nil, fmt.Errorf("unsquashfs -cat %s %s: %w", img, path, err)
	}
	return out, nil
}

// ParseListing parses `unsquashfs -lln -UTC` output: "drwxr-xr-x 0/0 123 2026-01-01 00:00 squashfs-root/bin".
func ParseListing(r io.Reader) ([]Entry, error) {
	var out []Entry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || !strings.Contains(line, "squashfs-root") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 6 {
			return nil, fmt.Errorf("unsquashfs listing: short line %q", line)
		}
		mode, err := parseMode(f[0])
		if err != nil {
			return nil, fmt.Errorf("unsquashfs listing %q: %w", line, err)
		}
		// Device nodes print "maj,min" where regular files print a size.
		size, _ := strconv.ParseInt(f[2], 10, 64)
		_, rest, _ := strings.Cut(line, " squashfs-root")
		name, target, _ := strings.Cut(rest, " -> ")
		out = append(out, Entry{Path: strings.TrimPrefix(name, "/"), Mode: mode, Size: size, Target: target})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read unsquashfs listing: %w", err)
	}
	return out, nil
}

// parseMode turns "drwsr-sr-t" into an fs.FileMode.
func parseMode(s string) (fs.FileMode, error) {
	if len(s) != 10 {
		return 0, fmt.Errorf("mode %q is not 10 characters", s)
	}
	var m fs.FileMode
	switch s[0] {
	case '-':
	case 'd':
		m |= fs.ModeDir
	case 'l':
		m |= fs.ModeSymlink
	case 'c':
		m |= fs.ModeDevice | fs.ModeCharDevice
	case 'b':
		m |= fs.ModeDevice
	case 'p':
		m |= fs.ModeNamedPipe
	case 's':
		m |= fs.ModeSocket
	default:
		return 0, fmt.Errorf("unknown file type %q", s[0])
	}
	bits := []struct {
		pos  int
		set  byte
		perm fs.FileMode
	}{{1, 'r', 0o400}, {2, 'w', 0o200}, {4, 'r', 0o040}, {5, 'w', 0o020}, {7, 'r', 0o004}, {8, 'w', 0o002}}
	for _, b := range bits {
		if s[b.pos] == b.set {
			m |= b.perm
		}
	}
	exec := func(c byte, x fs.FileMode, special fs.FileMode, setc, unsetc byte) {
		switch c {
		case 'x':
			m |= x
		case setc:
			m |= x | special
		case unsetc:
			m |= special
		}
	}
	exec(s[3], 0o100, fs.ModeSetuid, 's', 'S')
	exec(s[6], 0o010, fs.ModeSetgid, 's', 'S')
	exec(s[9], 0o001, fs.ModeSticky, 't', 'T')
	return m, nil
}
