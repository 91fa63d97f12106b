package persona

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

// MaxLogLine bounds one console line of a persona; longer lines are cut into several.
const MaxLogLine = 512

// A persona may put LogRate bytes a second on the console, in bursts of up to LogBurst: the
// serial console carries about 11 KiB/s and is the operator's, not one persona's.
const (
	LogRate  = 2048
	LogBurst = 16 << 10
)

// budget is a token bucket of console bytes.
type budget struct {
	tokens float64
	last   time.Time
	now    func() time.Time
}

func (b *budget) take(n int) bool {
	t := b.now()
	if !b.last.IsZero() {
		b.tokens = min(LogBurst, b.tokens+t.Sub(b.last).Seconds()*LogRate)
	}
	b.last = t
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// CopyLines copies r to w one line at a time, each line prefixed, cut at MaxLogLine bytes,
// stripped of control characters (a persona must not drive the operator's terminal) and handed
// to w in a single Write. Lines beyond the persona's console budget (LogRate) are dropped and
// counted. It returns at EOF, after writing an unterminated last line.
func CopyLines(w io.Writer, r io.Reader, prefix string) error {
	return copyLines(w, r, prefix, time.Now)
}

func copyLines(w io.Writer, r io.Reader, prefix string, now func() time.Time) error {
	br := bufio.NewReaderSize(r, MaxLogLine)
	b := &budget{tokens: LogBurst, now: now}
	dropped := 0
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			out := make([]byte, 0, len(prefix)+len(line)+1)
			out = append(out, prefix...)
			out = appendClean(out, bytes.TrimRight(line, "\r\n"))
			out = append(out, '\n')
			if !b.take(len(out)) {
				dropped++
			} else {
				if dropped > 0 {
					out = append(fmt.Appendf(nil, "%s(%d lines dropped: over the console budget)\n", prefix, dropped), out...)
					dropped = 0
				}
				if _, werr := w.Write(out); werr != nil {
					return werr
				}
			}
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return nil
		default:
			return err
		}
	}
}

// appendClean appends line as printable UTF-8: C0 and C1 control characters (but tab) and DEL
// become '?', invalid UTF-8 becomes U+FFFD. No byte of a persona can then move the cursor,
// return the carriage or start a line on the console.
func appendClean(out, line []byte) []byte {
	for len(line) > 0 {
		c, size := utf8.DecodeRune(line) // invalid UTF-8 decodes as U+FFFD
		line = line[size:]
		if c < 0x20 && c != '\t' || c >= 0x7f && c <= 0x9f {
			c = '?'
		}
		out = utf8.AppendRune(out, c)
	}
	return out
}
