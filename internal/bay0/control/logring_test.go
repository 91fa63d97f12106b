package control

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestLogRing(t *testing.T) {
	r := NewLogRing(3, 8)
	fmt.Fprint(r, "one\ntw")
	fmt.Fprint(r, "o\r\nthree\n")
	if got := r.Lines(); strings.Join(got, "|") != "one|two|three" {
		t.Errorf("Lines = %q", got)
	}
	fmt.Fprint(r, "four\nfive\nhalf")
	if got := r.Lines(); strings.Join(got, "|") != "three|four|five" {
		t.Errorf("after wrapping, Lines = %q", got)
	}
	fmt.Fprint(r, " line that is far too long\nsix\n")
	if got := r.Lines(); strings.Join(got, "|") != "five|half lin|six" {
		t.Errorf("after a long line, Lines = %q", got)
	}
	// Control characters and invalid UTF-8 are neutralised; the bound holds in bytes.
	fmt.Fprint(r, "\x1b[2Jok\x00\n\xff\xfeab\n\tx\u00e9\u00e9\u00e9\u00e9\n")
	if got := r.Lines(); strings.Join(got, "|") != "?[2Jok?|\ufffd\ufffdab|\tx\u00e9\u00e9\u00e9" {
		t.Errorf("cleaned Lines = %q", got)
	}
}

func TestLogRingDefaults(t *testing.T) {
	r := NewLogRing(0, 0)
	long := strings.Repeat("\"<", DefaultLogLineLen) + "\n"
	for range DefaultLogLines + 10 {
		io.WriteString(r, long)
	}
	lines := r.Lines()
	if len(lines) != DefaultLogLines || len(lines[0]) != DefaultLogLineLen {
		t.Fatalf("%d lines of %d bytes, want %d of %d", len(lines), len(lines[0]), DefaultLogLines, DefaultLogLineLen)
	}
	// The worst case still fits one answer.
	b, err := marshalLine(LogsResult{Lines: lines})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxResponseLine-100 {
		t.Errorf("a full ring encodes to %d bytes, more than an answer holds", len(b))
	}
	var back LogsResult
	if err := json.Unmarshal(b, &back); err != nil || back.Lines[0] != lines[0] {
		t.Errorf("ring does not survive JSON: %v", err)
	}
}

// TestLogRingWriteNeverFails: the ring sits in an io.MultiWriter with the console.
func TestLogRingWriteNeverFails(t *testing.T) {
	r := NewLogRing(1, 1)
	p := []byte("a very long line\nand another\n")
	if n, err := r.Write(p); n != len(p) || err != nil {
		t.Errorf("Write = %d, %v", n, err)
	}
}

// TestLogRingSince: lines are numbered from 1; Since returns those after a number, says where
// they begin when older ones were pushed out, and treats a number from an earlier boot (beyond
// the newest) as asking for everything.
func TestLogRingSince(t *testing.T) {
	r := NewLogRing(3, 0)
	if got := r.Since(0); len(got.Lines) != 0 || got.Next != 0 || got.First != 1 {
		t.Errorf("empty ring: %+v", got)
	}
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(r, "line %d\n", i)
	}
	for _, tc := range []struct {
		after, first uint64
		n            int
	}{{0, 3, 3}, {1, 3, 3}, {3, 4, 2}, {5, 6, 0}, {99, 3, 3}} {
		got := r.Since(tc.after)
		if got.First != tc.first || len(got.Lines) != tc.n || got.Next != 5 {
			t.Errorf("Since(%d) = %+v, want first %d, %d lines, next 5", tc.after, got, tc.first, tc.n)
		}
		if tc.n > 0 && got.Lines[len(got.Lines)-1] != "line 5" {
			t.Errorf("Since(%d) ends %q", tc.after, got.Lines[len(got.Lines)-1])
		}
	}
}
