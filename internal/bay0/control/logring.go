package control

import (
	"sync"
	"unicode/utf8"
)

// Default bounds of the governor's log ring, the answer of the logs verb.
const (
	DefaultLogLines   = 500
	DefaultLogLineLen = 512
)

// LogRing keeps the most recent lines written to it, bounded in count and length, so the
// governor can tee its console into it and serve them with the logs verb. It is an io.Writer
// that never fails, safe for concurrent use.
//
// A line longer than the bound is cut and the rest up to its newline dropped. Control
// characters (but tab, C1 included) become '?' and invalid UTF-8 becomes U+FFFD, so a line always encodes
// to JSON in at most twice its length.
type LogRing struct {
	mu      sync.Mutex
	lines   []string // ring storage, len <= max
	head    int      // index of the oldest line once the ring is full
	max     int
	lineLen int
	partial []byte // the line being written, at most lineLen bytes
	cut     bool   // the line being written was cut at lineLen
	total   uint64 // lines pushed since the ring was made: the newest line's sequence number
}

// NewLogRing returns a ring of at most lines lines of at most lineLen bytes each; values
// below 1 mean the defaults.
func NewLogRing(lines, lineLen int) *LogRing {
	if lines < 1 {
		lines = DefaultLogLines
	}
	if lineLen < 1 {
		lineLen = DefaultLogLineLen
	}
	return &LogRing{max: lines, lineLen: lineLen}
}

// Write adds p, split at newlines; a trailing part without newline waits for the rest of its
// line. It always reports len(p), nil, so an io.MultiWriter with the console never stops.
func (r *LogRing) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range p {
		switch {
		case c == '\n':
			r.push()
		case c == '\r':
			// CRLF from a terminal: the \n ends the line.
		case r.cut:
		case len(r.partial) >= r.lineLen:
			r.cut = true
		default:
			r.partial = append(r.partial, c)
		}
	}
	return len(p), nil
}

// push ends the line being written.
func (r *LogRing) push() {
	s := clean(r.partial, r.lineLen)
	r.partial, r.cut = r.partial[:0], false
	r.total++
	if len(r.lines) < r.max {
		r.lines = append(r.lines, s)
		return
	}
	r.lines[r.head] = s
	r.head = (r.head + 1) % r.max
}

// Lines returns the complete lines kept, oldest first.
func (r *LogRing) Lines() []string {
	l := r.Since(0)
	return l.Lines
}

// Since returns the lines kept whose sequence number is above after, oldest first. Lines are
// numbered from 1 in the order they were written; an after beyond the newest line (a client
// that followed an earlier boot) asks for every line kept.
func (r *LogRing) Since(after uint64) LogsResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	oldest := r.total - uint64(len(r.lines)) + 1
	if after > r.total {
		after = 0
	}
	first := max(after+1, oldest)
	out := make([]string, 0, r.total-first+1)
	for i := int(first - oldest); i < len(r.lines); i++ {
		out = append(out, r.lines[(r.head+i)%len(r.lines)])
	}
	return LogsResult{Lines: out, First: first, Next: r.total}
}

// clean makes b printable UTF-8 of at most n bytes.
func clean(b []byte, n int) string {
	out := make([]byte, 0, len(b))
	for len(b) > 0 {
		c, size := utf8.DecodeRune(b) // invalid UTF-8 decodes as U+FFFD
		b = b[size:]
		if c < 0x20 && c != '\t' || c >= 0x7f && c <= 0x9f {
			c = '?'
		}
		if len(out)+utf8.RuneLen(c) > n {
			break
		}
		out = utf8.AppendRune(out, c)
	}
	return string(out)
}
