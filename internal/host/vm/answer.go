package vm

import (
	"io"
	"sync"

	"alpinespine.org/spine/internal/bay0/persist"
)

// Answerer types passphrases at a machine's console each time bay0 prompts for one. It is
// both the console's sink (Write, fed every console byte) and its input (Read): plug it into
// Config.Console and Config.Stdin. An answer is only sent after the prompt was seen, so it
// never sits in the guest's input while echo is still on.
//
// Only bay0 can prompt: a prompt counts only at the very start of a console line. Every line
// a persona prints reaches the console prefixed with "persona NAME: " by bay0, so no text a
// persona prints (a prompt after a carriage return, in the middle of a line, split across
// writes) is ever answered.
//
// The answers are used in order and the last one repeats: NewAnswerer(wrong, right) answers
// a first prompt wrong and every later one right.
type Answerer struct {
	mu      sync.Mutex
	cond    *sync.Cond
	answers [][]byte // owned copies, wiped by Close
	next    int      // index of the next answer
	owed    int      // prompts seen and not answered yet
	out     []byte   // the answer being read, with its newline
	// line holds the start of the current console line, up to len(persist.Prompt) bytes;
	// matching is false once the line can no longer be a prompt.
	line     []byte
	matching bool
	closed   bool
	prompts  int
}

// NewAnswerer returns an Answerer that answers with copies of answers; the caller may wipe
// its own slices at once. At least one answer is required.
func NewAnswerer(answers ...[]byte) *Answerer {
	a := &Answerer{matching: true}
	a.cond = sync.NewCond(&a.mu)
	for _, p := range answers {
		a.answers = append(a.answers, append([]byte(nil), p...))
	}
	return a
}

// Write watches the console for a line that starts with the prompt. It never fails.
func (a *Answerer) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	prompt := persist.Prompt
	for _, c := range p {
		if c == '\n' {
			a.line, a.matching = a.line[:0], true
			continue
		}
		if !a.matching {
			continue
		}
		if c != prompt[len(a.line)] {
			a.matching = false
			continue
		}
		a.line = append(a.line, c)
		if len(a.line) == len(prompt) {
			a.owed++
			a.prompts++
			a.matching = false
		}
	}
	if a.owed > 0 {
		a.cond.Broadcast()
	}
	return len(p), nil
}

// Read blocks until a prompt needs an answer, then returns it (with "\n"). After Close it
// returns io.EOF.
func (a *Answerer) Read(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for len(a.out) == 0 && a.owed == 0 && !a.closed {
		a.cond.Wait()
	}
	if a.closed || len(a.out) == 0 && len(a.answers) == 0 {
		return 0, io.EOF
	}
	if len(a.out) == 0 {
		a.owed--
		ans := a.answers[min(a.next, len(a.answers)-1)]
		a.next++
		a.out = append(append(a.out[:0], ans...), '\n')
	}
	n := copy(p, a.out)
	persist.Wipe(a.out[:n])
	a.out = a.out[n:]
	return n, nil
}

// Prompts returns how many prompts the console has shown so far.
func (a *Answerer) Prompts() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.prompts
}

// Close wipes the answers and makes Read return io.EOF.
func (a *Answerer) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.answers {
		persist.Wipe(p)
	}
	persist.Wipe(a.out)
	a.answers, a.out, a.closed = nil, nil, true
	a.cond.Broadcast()
	return nil
}
