package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Handler carries out the verbs; the governor implements it. Serve calls one method at a time,
// from its own goroutine. A method that blocks blocks the channel and stops the progress
// reports, so the watchdog sees it.
type Handler interface {
	Status() (StatusInfo, error)
	Personas() ([]PersonaInfo, error)
	// Logs returns the lines of the persona name (bay0's own for "") newer than after, as
	// LogRing.Since does; an unknown name is an error.
	Logs(name string, after uint64) (LogsResult, error)
	// Replace, Stop and Start act on the named persona; an unknown name is an error.
	Replace(name string) error
	Stop(name string) error
	Start(name string) error
	// Reboot and Poweroff only ask for the action and return: Serve writes the answer after
	// they return, and the machine must still be up for it to leave.
	Reboot() error
	Poweroff() error
}

// Updater is implemented by a Handler that takes updates; without it, update is answered
// with ErrNotSupported.
//
// Update checks req.Offer, and only if it accepts the update calls ready, which sends the
// "ready" answer; the client then sends exactly req.Size raw bytes, which Update reads from
// body. Update's result (a JSON object) or error is the second answer to the request. progress
// must be called while the body streams, so the watchdog sees the channel alive.
type Updater interface {
	Update(req Request, ready func() error, body io.Reader, progress func()) (any, error)
}

// Fetcher is implemented by a Handler that takes updates fetched by the machine's courier
// (an update with a Source); without it they are answered with ErrNotSupported. UpdateFrom
// runs while Serve keeps reporting progress; it must call progress as bytes arrive.
type Fetcher interface {
	UpdateFrom(req Request, progress func()) (any, error)
}

// Ready is the first answer to an accepted update: send the body now.
type Ready struct {
	Ready bool  `json:"ready"`
	Size  int64 `json:"size"`
}

// BodyStall bounds how long the body of an update may stop flowing before the update is
// abandoned (where the stream supports read deadlines).
const BodyStall = 30 * time.Second

// Timing of the server.
const (
	// ProgressInterval is how often Serve reports progress while idle.
	ProgressInterval = 500 * time.Millisecond
	// hangupPause is the wait before reading again after the peer hung up. A virtio-serial
	// port with no host connected reads 0 bytes (EOF) at once, every time: without a pause
	// the server would spin.
	hangupPause = 100 * time.Millisecond
	// WriteTimeout bounds writing one answer when rw supports write deadlines (the port and
	// unix sockets do). A write on the port waits while no host is connected, so a host that
	// hangs up before its answer, or connects and never reads, would otherwise stall the loop.
	// A watchdog window must be longer than this plus the slowest verb.
	WriteTimeout = 2 * time.Second
)

// Serve answers requests read from rw until ctx ends or reading fails, and calls progress (if
// not nil) right after each answer is written and at least every ProgressInterval while
// idle, so the watchdog can see the loop is alive. (A governor may therefore carry out a
// reboot or poweroff at the first progress call after the Handler method returned: the
// answer has left by then.)
//
// rw is a serial line: EOF means the host side hung up, not the end. Serve drops any half
// line, waits briefly and reads again. Blank lines are ignored, so a client may send "\n" to
// end a half line left by an earlier one. Every other line gets exactly one answer, in
// order: bad JSON, an oversized line (consumed up to its newline), an unknown verb or field
// each get an error answer and the next line is served. An answer that cannot be written
// (no host connected, write timeout) is dropped; if it was cut short, the next answer starts
// with a newline so the client resynchronises.
//
// Serve returns ctx.Err() when ctx ends, or the read error (other than EOF) that ended the
// channel. A Read in progress when Serve returns is abandoned: close rw to release it.
func Serve(ctx context.Context, rw io.ReadWriter, h Handler, progress func()) error {
	if progress == nil {
		progress = func() {}
	}
	lines := make(chan readItem)
	next := make(chan *rawCopy)
	done := make(chan struct{})
	defer close(done)
	go readLines(rw, lines, next, done)

	tick := time.NewTicker(ProgressInterval)
	defer tick.Stop()
	w := answerWriter{w: rw}
	progress()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			progress()
		case it := <-lines:
			if it.err != nil {
				return fmt.Errorf("read control channel: %w", it.err)
			}
			if req, ok := updateRequest(h, it); ok {
				serveUpdate(ctx, h.(Updater), req, &w, next, done, progress)
				progress()
				continue
			}
			if req, ok := fetchRequest(h, it); ok {
				serveFetch(ctx, h.(Fetcher), req, &w, progress)
				progress()
				select {
				case next <- nil:
				case <-done:
				}
				continue
			}
			if resp, ok := answer(h, it); ok {
				w.write(resp)
			}
			progress()
			select {
			case next <- nil:
			case <-done:
			}
		}
	}
}

// updateRequest picks out a valid update request for a Handler that takes updates; every other
// line goes through answer.
func updateRequest(h Handler, it readItem) (Request, bool) {
	if it.tooLong || isBlank(it.line) {
		return Request{}, false
	}
	if _, ok := h.(Updater); !ok {
		return Request{}, false
	}
	req, err := DecodeRequest(it.line)
	if err != nil || req.Verb != VerbUpdate || req.Source != "" {
		return Request{}, false
	}
	return req, true
}

// fetchRequest picks out a valid update-from-source request for a Handler that fetches.
func fetchRequest(h Handler, it readItem) (Request, bool) {
	if it.tooLong || isBlank(it.line) {
		return Request{}, false
	}
	if _, ok := h.(Fetcher); !ok {
		return Request{}, false
	}
	req, err := DecodeRequest(it.line)
	if err != nil || req.Verb != VerbUpdate || req.Source == "" {
		return Request{}, false
	}
	return req, true
}

// serveFetch runs one courier update off the loop, reporting progress until it ends, then
// writes its answer. Requests read meanwhile wait their turn.
func serveFetch(ctx context.Context, f Fetcher, req Request, w *answerWriter, progress func()) {
	res := make(chan outcome, 1)
	go func() {
		r, err := f.UpdateFrom(req, progress)
		res <- outcome{r, err}
	}()
	out := await(ctx, res, progress, nil)
	w.write(resultLine(req.ID, out.result, out.err))
}

// outcome is what an update ended with.
type outcome struct {
	result any
	err    error
}

// await waits for an update running off the loop, reporting progress every ProgressInterval
// meanwhile; when ctx ends first, cancel (if any) is called once and the wait goes on.
func await(ctx context.Context, res <-chan outcome, progress func(), cancel func()) outcome {
	tick := time.NewTicker(ProgressInterval)
	defer tick.Stop()
	done := ctx.Done()
	for {
		select {
		case out := <-res:
			return out
		case <-tick.C:
			progress()
		case <-done:
			if cancel != nil {
				cancel()
			}
			done = nil
		}
	}
}

// resultLine is the answer to an update: its result, or its error.
func resultLine(id uint64, result any, err error) []byte {
	if err != nil {
		return errorLine(id, fmt.Errorf("update: %w", err))
	}
	b, err := marshalLine(result)
	if err == nil {
		var line []byte
		if line, err = EncodeResponse(Response{V: Version, ID: id, OK: true, Result: b}); err == nil {
			return line
		}
	}
	return errorLine(id, fmt.Errorf("update: %w", err))
}

// serveUpdate runs one update: the Updater checks the offer and says ready, the reader goroutine
// copies the raw body into a pipe the Updater reads, and the result is the second answer.
// Progress is reported all along, since writing and verifying a slot takes a while.
func serveUpdate(ctx context.Context, u Updater, req Request, w *answerWriter, next chan<- *rawCopy, done <-chan struct{}, progress func()) {
	pr, pw := io.Pipe()
	copyDone := make(chan error, 1)
	armed := make(chan struct{})
	ready := func() error {
		b, err := marshalLine(Ready{Ready: true, Size: req.Size})
		if err != nil {
			return err
		}
		line, err := EncodeResponse(Response{V: Version, ID: req.ID, OK: true, Result: b})
		if err != nil {
			return err
		}
		w.write(line)
		select {
		case next <- &rawCopy{n: req.Size, w: pw, done: copyDone}:
			close(armed)
			return nil
		case <-done:
			return errors.New("control channel closed")
		}
	}
	res := make(chan outcome, 1)
	go func() {
		r, err := u.Update(req, ready, pr, progress)
		// Whatever Update did not read is drained by the reader, which discards it.
		pr.CloseWithError(errors.New("update finished"))
		res <- outcome{r, err}
	}()
	out := await(ctx, res, progress, func() { pr.CloseWithError(ctx.Err()) })
	tick := time.NewTicker(ProgressInterval)
	defer tick.Stop()
	select {
	case <-armed:
		// The reader copies or discards the whole body (a stalled client holds it up to
		// BodyStall), then goes on reading lines by itself; progress goes on meanwhile, so
		// draining never starves the watchdog.
	drain:
		for {
			select {
			case <-copyDone:
				break drain
			case <-tick.C:
				progress()
			}
		}
	default:
		select {
		case next <- nil:
		case <-done:
		}
	}
	w.write(resultLine(req.ID, out.result, out.err))
}

// answer turns one line into its response; ok is false for a blank line, which gets none.
func answer(h Handler, it readItem) (line []byte, ok bool) {
	if it.tooLong {
		return errorLine(0, fmt.Errorf("%w: a request is at most %d bytes; the line was dropped", ErrTooLong, MaxRequestLine)), true
	}
	if isBlank(it.line) {
		return nil, false
	}
	req, err := DecodeRequest(it.line)
	if err != nil {
		return errorLine(req.ID, err), true
	}
	result, err := dispatch(h, req)
	if err != nil {
		return errorLine(req.ID, fmt.Errorf("%s: %w", req.Verb, err)), true
	}
	b, err := marshalLine(result)
	if err != nil {
		return errorLine(req.ID, fmt.Errorf("%s: %w", req.Verb, err)), true
	}
	out, err := EncodeResponse(Response{V: Version, ID: req.ID, OK: true, Result: b})
	if err != nil {
		return errorLine(req.ID, fmt.Errorf("%s: %w", req.Verb, err)), true
	}
	if len(out)-1 > MaxResponseLine {
		return errorLine(req.ID, fmt.Errorf("%s: %w: the answer is %d bytes, more than %d", req.Verb, ErrTooLong, len(out)-1, MaxResponseLine)), true
	}
	return out, true
}

// dispatch calls the Handler for a valid request. The switch is the whole verb set.
func dispatch(h Handler, req Request) (any, error) {
	switch req.Verb {
	case VerbStatus:
		return h.Status()
	case VerbPersonas:
		p, err := h.Personas()
		if p == nil {
			p = []PersonaInfo{}
		}
		return PersonasResult{Personas: p}, err
	case VerbLogs:
		l, err := h.Logs(req.Name, req.After)
		if l.Lines == nil {
			l.Lines = []string{}
		}
		return l, err
	case VerbReplace:
		return Done{}, h.Replace(req.Name)
	case VerbStop:
		return Done{}, h.Stop(req.Name)
	case VerbStart:
		return Done{}, h.Start(req.Name)
	case VerbReboot:
		return Done{}, h.Reboot()
	case VerbPoweroff:
		return Done{}, h.Poweroff()
	case VerbUpdate:
		// A Handler that takes updates never gets here: Serve streams them (serveUpdate).
		return nil, ErrNotSupported
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownVerb, shorten(string(req.Verb)))
}

// errorLine is the answer carrying err, its message bounded.
func errorLine(id uint64, err error) []byte {
	msg := truncate(err.Error(), MaxError)
	b, encErr := EncodeResponse(Response{V: Version, ID: id, Error: msg})
	if encErr != nil { // cannot happen: msg is never empty
		b = []byte(`{"v":1,"id":0,"ok":false,"error":"internal error"}` + "\n")
	}
	return b
}

// isBlank reports whether b holds only JSON whitespace (a line's \n is already gone).
func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}

// answerWriter writes answers, each under WriteTimeout where the stream allows it.
type answerWriter struct {
	w io.Writer
	// cut is set when an answer was written only in part: the next one starts a fresh line.
	cut bool
}

type writeDeadliner interface {
	SetWriteDeadline(t time.Time) error
}

func (a *answerWriter) write(line []byte) {
	prefix := 0
	if a.cut {
		line = append([]byte{'\n'}, line...)
		prefix = 1
	}
	d, hasDeadline := a.w.(writeDeadliner)
	if hasDeadline {
		_ = d.SetWriteDeadline(time.Now().Add(WriteTimeout))
	}
	n, _ := a.w.Write(line)
	if hasDeadline {
		_ = d.SetWriteDeadline(time.Time{})
	}
	// An answer with no host to read it is lost, as on any serial line: the error is dropped.
	// Only a partial write leaves something to repair; any byte out repairs an earlier cut.
	a.cut = (a.cut && n == 0) || (n > prefix && n < len(line))
}

// readItem is one line read from the channel, or the error that ended reading.
type readItem struct {
	line    []byte
	tooLong bool
	err     error
}

// lineReader splits a serial stream into bounded lines.
type lineReader struct {
	br      *bufio.Reader
	tooLong bool
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, MaxRequestLine+1)}
}

// errHangup reports that the peer hung up; the half line read so far is dropped.
var errHangup = errors.New("hang-up")

// next returns the next line without its newline (valid until the next call), or tooLong for
// a line longer than MaxRequestLine (consumed entirely), or errHangup, or a read error.
func (l *lineReader) next() (line []byte, tooLong bool, err error) {
	for {
		b, err := l.br.ReadSlice('\n')
		switch {
		case err == nil:
			if l.tooLong {
				l.tooLong = false
				return nil, true, nil
			}
			return b[:len(b)-1], false, nil
		case errors.Is(err, bufio.ErrBufferFull):
			l.tooLong = true
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrNoProgress):
			l.tooLong = false
			return nil, false, errHangup
		default:
			return nil, false, err
		}
	}
}

// rawCopy asks the reader goroutine to copy the next n bytes of the stream to w (an update's
// body) instead of reading them as lines, and to say on done how it went.
type rawCopy struct {
	n    int64
	w    *io.PipeWriter
	done chan<- error
}

type readDeadliner interface {
	SetReadDeadline(t time.Time) error
}

// copyRaw copies c.n bytes from the line reader's buffer and stream into c.w. Once c.w stops
// taking bytes (the update failed), the rest is read and discarded, so that body bytes are
// never taken for requests. A stream that stalls longer than BodyStall ends the copy.
func (l *lineReader) copyRaw(r io.Reader, c *rawCopy) error {
	d, hasDeadline := r.(readDeadliner)
	buf := make([]byte, 256<<10)
	var err error
	sink := io.Writer(c.w)
	for left := c.n; left > 0; {
		if hasDeadline {
			_ = d.SetReadDeadline(time.Now().Add(BodyStall))
		}
		n := int64(len(buf))
		if left < n {
			n = left
		}
		k, rerr := l.br.Read(buf[:n])
		left -= int64(k)
		if k > 0 && sink != io.Discard {
			if _, werr := sink.Write(buf[:k]); werr != nil {
				sink = io.Discard
			}
		}
		if rerr != nil && k == 0 {
			err = fmt.Errorf("update body: %d bytes missing: %w", left, rerr)
			break
		}
	}
	if hasDeadline {
		_ = d.SetReadDeadline(time.Time{})
	}
	c.w.CloseWithError(err)
	return err
}

// readLines feeds lines to out until reading fails or done is closed. After each line it waits
// on next: nil means go on with lines, a rawCopy means the next bytes are an update's body.
func readLines(r io.Reader, out chan<- readItem, next <-chan *rawCopy, done <-chan struct{}) {
	lr := newLineReader(r)
	pause := time.NewTimer(0)
	<-pause.C
	for {
		line, tooLong, err := lr.next()
		var it readItem
		switch {
		case errors.Is(err, errHangup):
			pause.Reset(hangupPause)
			select {
			case <-pause.C:
				continue
			case <-done:
				return
			}
		case err != nil:
			it.err = err
		case tooLong:
			it.tooLong = true
		default:
			it.line = append([]byte(nil), line...)
		}
		select {
		case out <- it:
		case <-done:
			return
		}
		if it.err != nil {
			return
		}
		var c *rawCopy
		select {
		case c = <-next:
		case <-done:
			return
		}
		if c != nil {
			c.done <- lr.copyRaw(r, c)
		}
	}
}
