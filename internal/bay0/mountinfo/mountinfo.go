// Package mountinfo reads /proc/self/mountinfo (see proc(5)): bay0 checks the flags its
// mounts really carry, not the flags it asked for.
package mountinfo

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrNotMounted means mountinfo has no entry for the mount point.
var ErrNotMounted = errors.New("not mounted")

// Entry is one line of /proc/self/mountinfo (see proc(5)).
type Entry struct {
	Line       string
	MountPoint string
	// Options are the per-mount options (field 6), e.g. "rw", "nodev".
	Options []string
	FSType  string
	Source  string
}

// Has reports whether the per-mount options include opt.
func (m Entry) Has(opt string) bool {
	for _, o := range m.Options {
		if o == opt {
			return true
		}
	}
	return false
}

// Secure reports whether the mount carries nodev, nosuid and noexec.
func (m Entry) Secure() bool {
	return m.Has("nodev") && m.Has("nosuid") && m.Has("noexec")
}

// Find returns the last (topmost) mountinfo entry for mountPoint, or ErrNotMounted.
func Find(r io.Reader, mountPoint string) (Entry, error) {
	var found *Entry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		e, ok := parse(sc.Text())
		if ok && e.MountPoint == mountPoint {
			found = &e
		}
	}
	if err := sc.Err(); err != nil {
		return Entry{}, fmt.Errorf("read mountinfo: %w", err)
	}
	if found == nil {
		return Entry{}, fmt.Errorf("%s: %w", mountPoint, ErrNotMounted)
	}
	return *found, nil
}

// parse splits "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw".
func parse(line string) (Entry, bool) {
	f := strings.Fields(line)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 6 || sep < 0 || sep+2 >= len(f) {
		return Entry{}, false
	}
	return Entry{
		Line:       line,
		MountPoint: unescapeOctal(f[4]),
		Options:    strings.Split(f[5], ","),
		FSType:     f[sep+1],
		Source:     unescapeOctal(f[sep+2]),
	}, true
}

// unescapeOctal undoes the kernel's \ooo escaping of space, tab, newline and backslash.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
