package vm

import (
	"bytes"
	"io"
	"strings"
)

// QuietConsole returns a writer that passes on to w only the console lines of bay0 and of its
// personas (those starting with "bay0:" or "persona "), so that a person watching a machine
// sees what the machine does, not the firmware's and the kernel's boot logs. A line that has
// not ended yet is passed on as soon as it is known to be one of those: bay0's passphrase
// prompt waits on a line of its own.
func QuietConsole(w io.Writer) io.Writer { return &quietConsole{w: w} }

type quietConsole struct {
	w       io.Writer
	line    []byte // the current line, held while it may still be dropped
	passing bool   // the current line is being passed on as it comes
	decided bool   // passing is known for the current line
}

// quietPrefixes start the lines QuietConsole keeps.
var quietPrefixes = []string{"bay0:", "persona "}

func (q *quietConsole) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i+1]
		}
		p = p[len(chunk):]
		if err := q.take(chunk, i >= 0); err != nil {
			return n, err
		}
	}
	return n, nil
}

// take handles part of one line; ended says it holds the line's newline.
func (q *quietConsole) take(chunk []byte, ended bool) error {
	var err error
	switch {
	case q.decided && q.passing:
		_, err = q.w.Write(chunk)
	case q.decided:
	default:
		q.line = append(q.line, chunk...)
		s := strings.TrimLeft(string(q.line), "\r")
		for _, pre := range quietPrefixes {
			if strings.HasPrefix(s, pre) {
				q.decided, q.passing = true, true
			}
		}
		if !q.decided && (ended || !couldStart(s)) {
			q.decided = true
		}
		if q.passing {
			_, err = q.w.Write(q.line)
		}
		if q.decided {
			q.line = q.line[:0]
		}
	}
	if ended {
		q.decided, q.passing = false, false
		q.line = q.line[:0]
	}
	return err
}

// couldStart reports whether s may still grow into a kept line.
func couldStart(s string) bool {
	for _, pre := range quietPrefixes {
		if strings.HasPrefix(pre, s) {
			return true
		}
	}
	return false
}
