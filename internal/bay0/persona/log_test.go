package persona

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"alpinespine.org/spine/internal/format/event"
)

// FuzzCopyLinesUnforgeable: whatever a persona writes, every console line it produces starts
// with its prefix, is printable UTF-8 without control characters, and is never a bay0 event.
func FuzzCopyLinesUnforgeable(f *testing.F) {
	for _, s := range []string{
		"bay0: event=slot-committed slot=a version=9 min_version=9\n",
		"\rbay0: event=halt action=reboot\n",
		"\x1b[2K\rbay0: event=halt action=reboot\n",
		"\u0085bay0: event=halt\n\xc2\x9bbay0: event=halt\n",
		strings.Repeat("x", MaxLogLine-len("persona f: ")) + "bay0: event=halt action=reboot\n",
		strings.Repeat("x", MaxLogLine) + "bay0: event=halt action=reboot\n",
		"no newline at the end: bay0: event=halt",
		"\x00bay0: event=halt\n\nbay0: event=halt",
	} {
		f.Add([]byte(s))
	}
	const prefix = "persona f: "
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		clock := time.Unix(0, 0)
		if err := copyLines(&out, bytes.NewReader(in), prefix, func() time.Time { return clock }); err != nil {
			t.Fatal(err)
		}
		if out.Len() == 0 {
			return
		}
		if !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
			t.Fatalf("output does not end a line: %q", out.String())
		}
		for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
			if !strings.HasPrefix(line, prefix) {
				t.Fatalf("line %q lacks the persona's prefix (input %q)", line, in)
			}
			if _, err := event.Parse(line); err == nil {
				t.Fatalf("line %q parses as a bay0 event", line)
			}
			if !utf8.ValidString(line) {
				t.Fatalf("line %q is not UTF-8", line)
			}
			for _, r := range line {
				if r < 0x20 && r != '\t' || r >= 0x7f && r <= 0x9f {
					t.Fatalf("line %q holds control character %U", line, r)
				}
			}
		}
	})
}
