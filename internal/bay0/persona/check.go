package persona

// This file holds the pure parts of a persona's exec health check on the governor's side: the
// config of one check (the protocol itself is package launch's) and the bounded tail of its
// output. The kernel-facing side is check_linux.go.

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"alpinespine.org/spine/internal/bay0/launch"
)

// MaxCheckOutput is how much of a check's output is kept: its last bytes.
const MaxCheckOutput = 1024

// CheckConfig renders the config of one exec check of s running argv: the workload's
// environment, working directory, limits and filter, and the host ids of its user.
func (s Spec) CheckConfig(argv []string) launch.CheckConfig {
	uid, gid := s.RunAs.Host(s.UID)
	return launch.CheckConfig{Version: launch.CheckConfigVersion, Name: s.Name, Exec: argv, Env: s.Env, Workdir: s.Workdir,
		UID: uid, GID: gid, Rlimits: s.Rlimits, Seccomp: s.Seccomp}
}

// Tail keeps the last max bytes written to it; writing never fails.
type Tail struct {
	max int
	buf []byte
}

// NewTail returns a Tail of max bytes.
func NewTail(max int) *Tail { return &Tail{max: max} }

func (t *Tail) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// String renders the tail for a status line: valid UTF-8, each line break and other control
// character shown as a space, surrounding space trimmed. A rune cut in half at the start is
// dropped.
func (t *Tail) String() string {
	b := t.buf
	for len(b) > 0 && !utf8.RuneStart(b[0]) {
		b = b[1:]
	}
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	return strings.TrimSpace(s)
}
