package persist

import (
	"bytes"
	"io"
	"sync"
)

// Answerer types passphrases at a machine's console each time bay0 prompts for one. It is
// both the console's sink (Write, fed every console byte) and its input (Read): plug it into
// vm.Config.Console and vm.Config.Stdin. An answer is only sent after the prompt was seen,
// so it never sits in the guest's input while echo is still on.
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
	tail    []byte   // the last len(Prompt)-1 console bytes, to find a prompt split across writes
	closed  bool
	prompts int
}

// NewAnswerer returns an Answerer that answers with copies of answers; the caller may wipe
// its own slices at once. At least one answer is required.
func NewAnswerer(answers ...[]byte) *Answerer {
	a := &Answerer{}
	a.cond = sync.NewCond(&a.mu)
	for _, p := range answers {
		a.answers = append(a.answers, append([]byte(nil), p...))
	}
	return a
}

// Write watches the console for the prompt. It never fails.
func (a *Answerer) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	buf := append(a.tail, p...)
	for {
		i := bytes.Index(buf, []byte(Prompt))
		if i < 0 {
			break
		}
		a.owed++
		a.prompts++
		buf = buf[i+len(Prompt):]
	}
	keep := min(len(buf), len(Prompt)-1)
	a.tail = append(a.tail[:0:0], buf[len(buf)-keep:]...)
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
	Wipe(a.out[:n])
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
		Wipe(p)
	}
	Wipe(a.out)
	a.answers, a.out, a.closed = nil, nil, true
	a.cond.Broadcast()
	return nil
}
