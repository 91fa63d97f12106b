package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeHandler records calls and answers from fixed data.
type fakeHandler struct {
	mu    sync.Mutex
	calls []string
	fail  error // returned by every action when set
}

func (f *fakeHandler) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeHandler) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func testStatus() StatusInfo {
	return StatusInfo{Spine: "demo", Version: 3, Slot: "a", MinVersion: 2,
		Slots: []SlotInfo{
			{Slot: "a", State: "good", Version: 3},
			{Slot: "b", State: "bad", Version: 4, Reason: "verity: root hash mismatch"},
		},
		Kernel:   KernelInfo{Release: "6.1.192-spine", Version: "#1 SMP Thu Jan  1 00:00:00 UTC 2026", SHA256: "93dc"},
		UptimeMS: 12345, PersistMounted: true,
		Watchdog:  WatchdogInfo{Enabled: true, TimeoutMS: 10000, SinceFeedMS: ptr(uint64(400))},
		LastReset: "fatal: persona supervisor: deadlock", Missing: []string{"persona web waiting: could not start: no eth0"},
		Boot: []BootPhase{{Name: "stage1: setup", MS: 310}, {Name: "persist", MS: 2200}}}
}

func testPersonas() []PersonaInfo {
	return []PersonaInfo{
		{Name: "web", State: "running", PID: 212, Restarts: 1,
			Limits: Limits{CPUMax: "50000 100000", MemoryMax: "67108864", PidsMax: "64"}, LastExit: "exit status 1"},
		{Name: "db", State: "stopped", Limits: Limits{CPUMax: "max", MemoryMax: "max", PidsMax: "max"}},
	}
}

func (f *fakeHandler) Status() (StatusInfo, error) { f.record("status"); return testStatus(), nil }
func (f *fakeHandler) Personas() ([]PersonaInfo, error) {
	f.record("personas")
	return testPersonas(), nil
}
func (f *fakeHandler) Logs(name string, after uint64) (LogsResult, error) {
	f.record(strings.TrimSpace(fmt.Sprintf("logs %s", name)))
	return LogsResult{Lines: []string{"bay0: event=up", "bay0: <persona> & \"web\" started"}, First: after + 1, Next: after + 2}, nil
}
func (f *fakeHandler) Replace(n string) error { f.record("replace " + n); return f.fail }
func (f *fakeHandler) Stop(n string) error    { f.record("stop " + n); return f.fail }
func (f *fakeHandler) Start(n string) error   { f.record("start " + n); return f.fail }
func (f *fakeHandler) Reboot() error          { f.record("reboot"); return f.fail }
func (f *fakeHandler) Poweroff() error        { f.record("poweroff"); return f.fail }

// updatingHandler is a Handler that is also an Updater. It refuses an offer whose manifest is
// "bad", and gives up after reading failAfter body bytes when that is set.
type updatingHandler struct {
	fakeHandler
	failAfter int
	body      bytes.Buffer
}

func (u *updatingHandler) Update(req Request, ready func() error, body io.Reader, progress func()) (any, error) {
	u.record("update")
	if string(req.Offer.Manifest) == "bad" {
		return nil, errors.New("offer refused")
	}
	if err := ready(); err != nil {
		return nil, err
	}
	r := body
	if u.failAfter > 0 {
		r = io.LimitReader(body, int64(u.failAfter))
	}
	n, err := io.Copy(&u.body, r)
	progress()
	if err != nil {
		return nil, err
	}
	if u.failAfter > 0 {
		return nil, errors.New("disk full")
	}
	return map[string]any{"state": "written", "bytes": n}, nil
}

// harness runs Serve over two pipes: lines go in through a writer goroutine (so a burst never
// deadlocks against unread answers), answers come out line by line.
type harness struct {
	t        *testing.T
	in       chan []byte
	out      chan []byte
	progress atomic.Int64
	done     chan error
	cancel   context.CancelFunc
}

func serve(t *testing.T, h Handler) *harness {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	hs := &harness{t: t, in: make(chan []byte, 64), out: make(chan []byte, 64), done: make(chan error, 1), cancel: cancel}
	go func() {
		hs.done <- Serve(ctx, struct {
			io.Reader
			io.Writer
		}{inR, outW}, h, func() { hs.progress.Add(1) })
	}()
	go func() {
		for b := range hs.in {
			if _, err := inW.Write(b); err != nil {
				return
			}
		}
	}()
	go func() {
		br := bufio.NewReaderSize(outR, MaxResponseLine+1)
		for {
			b, err := br.ReadBytes('\n')
			if err != nil {
				close(hs.out)
				return
			}
			hs.out <- b
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-hs.done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Serve returned %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after cancel")
		}
		close(hs.in)
		inR.Close()
		outR.Close()
	})
	return hs
}

func (hs *harness) send(s string) { hs.in <- []byte(s) }

// recv returns the next answer, failing the test if none comes.
func (hs *harness) recv() Response {
	hs.t.Helper()
	select {
	case b, ok := <-hs.out:
		if !ok {
			hs.t.Fatal("answer stream closed")
		}
		r, err := DecodeResponse(bytes.TrimSuffix(b, []byte("\n")))
		if err != nil {
			hs.t.Fatalf("server wrote an invalid answer %q: %v", b, err)
		}
		return r
	case <-time.After(5 * time.Second):
		hs.t.Fatal("no answer within 5 s")
	}
	return Response{}
}

// call sends one request line and returns its answer.
func (hs *harness) call(line string) Response {
	hs.t.Helper()
	hs.send(line + "\n")
	return hs.recv()
}

func (hs *harness) wantOK(line string) Response {
	hs.t.Helper()
	r := hs.call(line)
	if !r.OK {
		hs.t.Fatalf("%s: error %q", line, r.Error)
	}
	return r
}

func (hs *harness) wantError(line, contains string) Response {
	hs.t.Helper()
	r := hs.call(line)
	if r.OK || !strings.Contains(r.Error, contains) {
		hs.t.Fatalf("%.80s: got %+v, want an error containing %q", line, r, contains)
	}
	return r
}

func TestServeEveryVerb(t *testing.T) {
	h := &fakeHandler{}
	hs := serve(t, h)

	r := hs.wantOK(`{"v":1,"id":1,"verb":"status"}`)
	var st StatusInfo
	if err := r.Decode(&st); err != nil {
		t.Fatal(err)
	}
	if r.ID != 1 || st.Spine != "demo" || len(st.Slots) != 2 || st.Slots[1].Reason == "" || !st.Watchdog.Enabled {
		t.Errorf("status = %+v", st)
	}
	var ps PersonasResult
	if err := hs.wantOK(`{"v":1,"id":2,"verb":"personas"}`).Decode(&ps); err != nil {
		t.Fatal(err)
	}
	if len(ps.Personas) != 2 || ps.Personas[0].Limits.CPUMax != "50000 100000" {
		t.Errorf("personas = %+v", ps)
	}
	var logs LogsResult
	if err := hs.wantOK(`{"v":1,"id":3,"verb":"logs"}`).Decode(&logs); err != nil {
		t.Fatal(err)
	}
	if len(logs.Lines) != 2 || logs.Lines[1] != `bay0: <persona> & "web" started` {
		t.Errorf("logs = %q", logs.Lines)
	}
	for i, line := range []string{
		`{"v":1,"id":4,"verb":"replace","name":"web"}`,
		`{"v":1,"id":5,"verb":"stop","name":"web"}`,
		`{"v":1,"id":6,"verb":"start","name":"web"}`,
		`{"v":1,"id":7,"verb":"reboot"}`,
		`{"v":1,"id":8,"verb":"poweroff"}`,
	} {
		r := hs.wantOK(line)
		if r.ID != uint64(i+4) || string(r.Result) != "{}" {
			t.Errorf("%s: answer %+v", line, r)
		}
	}
	hs.wantError(`{"v":1,"id":9,"verb":"update","offer":{"footer":"AA==","manifest":"AA==","signature":"AA=="},"size":1}`, "update: not supported yet")
	hs.wantError(`{"v":1,"id":10,"verb":"update"}`, "update needs an offer")
	want := []string{"status", "personas", "logs", "replace web", "stop web", "start web", "reboot", "poweroff"}
	if got := h.Calls(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("handler calls = %q, want %q", got, want)
	}
}

func TestServeHandlerError(t *testing.T) {
	hs := serve(t, &fakeHandler{fail: errors.New(`no persona "nope"`)})
	r := hs.wantError(`{"v":1,"id":5,"verb":"stop","name":"nope"}`, `stop: no persona "nope"`)
	if r.ID != 5 {
		t.Errorf("error answer has id %d, want 5", r.ID)
	}
}

func TestServeUpdater(t *testing.T) {
	body := strings.Repeat("0123456789abcdef\n{\"v\":1}\n", 1000)
	offer := `"offer":{"footer":"AA==","manifest":"bWFuaWZlc3Q=","signature":"AA=="}`

	u := &updatingHandler{}
	hs := serve(t, u)
	hs.send(fmt.Sprintf(`{"v":1,"id":1,"verb":"update",%s,"size":%d}`+"\n", offer, len(body)))
	if r := hs.recv(); !r.OK || string(r.Result) != fmt.Sprintf(`{"ready":true,"size":%d}`, len(body)) {
		t.Fatalf("first answer to update: %+v", r)
	}
	hs.send(body)
	if r := hs.recv(); !r.OK || string(r.Result) != fmt.Sprintf(`{"bytes":%d,"state":"written"}`, len(body)) {
		t.Fatalf("second answer to update: %+v %s", r, r.Result)
	}
	if u.body.String() != body {
		t.Fatal("the updater did not receive the body byte for byte")
	}
	hs.wantOK(`{"v":1,"id":2,"verb":"status"}`)

	// A refused offer gets one error answer and no body is expected.
	hs.wantError(`{"v":1,"id":3,"verb":"update","offer":{"footer":"AA==","manifest":"YmFk","signature":"AA=="},"size":10}`, "offer refused")
	hs.wantOK(`{"v":1,"id":4,"verb":"status"}`)
}

// TestServeUpdaterFailsMidBody: an update that gives up half way still has its whole body
// consumed, so no body byte is ever taken for a request.
func TestServeUpdaterFailsMidBody(t *testing.T) {
	body := strings.Repeat(`{"v":1,"id":99,"verb":"reboot"}`+"\n", 500)
	hs := serve(t, &updatingHandler{failAfter: 100})
	hs.send(fmt.Sprintf(`{"v":1,"id":1,"verb":"update","offer":{"footer":"AA==","manifest":"bQ==","signature":"AA=="},"size":%d}`+"\n", len(body)))
	if r := hs.recv(); !r.OK {
		t.Fatalf("first answer: %+v", r)
	}
	hs.send(body)
	if r := hs.recv(); r.OK || !strings.Contains(r.Error, "disk full") {
		t.Fatalf("second answer: %+v", r)
	}
	r := hs.wantOK(`{"v":1,"id":2,"verb":"status"}`)
	if r.ID != 2 {
		t.Fatalf("answer id %d", r.ID)
	}
}

// TestServeBadRequests: every kind of bad line gets one error answer and the next request
// is served.
func TestServeBadRequests(t *testing.T) {
	h := &fakeHandler{}
	hs := serve(t, h)
	for _, tc := range []struct{ line, want string }{
		{`{"v":1,"id":1,"verb":`, "malformed JSON"},
		{`not json at all`, "malformed JSON"},
		{"\x00\xff\xfe{{{", "malformed JSON"},
		{`{"v":2,"id":2,"verb":"status"}`, "unsupported protocol version 2"},
		{`{"v":1,"id":3,"verb":"exec"}`, `unknown verb "exec"`},
		{`{"v":1,"id":4,"verb":"status","cmd":"sh"}`, `unknown field "cmd"`},
		{`{"v":1,"id":5,"verb":"status","name":"web"}`, `field not allowed "name" for status`},
		{`{"v":1,"id":6,"verb":"stop"}`, `missing field "name"`},
		{`{"v":1,"id":7,"verb":"stop","name":"/bin/sh"}`, "bad persona name"},
		{`{"v":1,"id":8,"verb":"status","verb":"reboot"}`, `duplicate field "verb"`},
		{strings.Repeat("x", MaxRequestLine+1), "at most 131072 bytes"},
		{strings.Repeat(`{"v":1,"id":9,"verb":"status"}`, 5000), "at most 131072 bytes"},
		{`{"v":1,"id":10,"verb":"status","` + strings.Repeat("k", 3000) + `":1}`, "unknown field"},
	} {
		r := hs.wantError(tc.line, tc.want)
		if len(r.Error) > MaxError+3 {
			t.Errorf("error message of %d bytes", len(r.Error))
		}
		hs.wantOK(`{"v":1,"id":100,"verb":"status"}`)
	}
	for _, c := range h.Calls() {
		if c != "status" {
			t.Errorf("a bad request reached the handler: %q", c)
		}
	}
}

// TestServeRefusesForeignVerbs: no verb outside the closed set reaches the handler.
func TestServeRefusesForeignVerbs(t *testing.T) {
	h := &updatingHandler{}
	hs := serve(t, h)
	for i, v := range refusedVerbs() {
		hs.wantError(fmt.Sprintf(`{"v":1,"id":%d,"verb":%s}`, i+1, jsonString(v)), "unknown verb")
		hs.wantError(fmt.Sprintf(`{"v":1,"id":%d,"verb":%s,"name":"web"}`, i+1, jsonString(v)), "unknown verb")
	}
	if c := h.Calls(); len(c) != 0 {
		t.Errorf("refused verbs reached the handler: %q", c)
	}
}

// TestServeGarbageBurst: a burst of noise (binary, half lines, huge lines, blank lines) gets
// error answers only for its non-blank lines, and then a good request is answered.
func TestServeGarbageBurst(t *testing.T) {
	hs := serve(t, &fakeHandler{})
	var burst bytes.Buffer
	lines := 0
	for i := range 200 {
		switch i % 5 {
		case 0:
			burst.WriteString("\n\r\n  \n") // blank: no answer
		case 1:
			burst.Write(bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, i))
			burst.WriteByte('\n')
			lines++
		case 2:
			burst.WriteString(`{"v":1,"id":`)
			burst.WriteByte('\n')
			lines++
		case 3:
			burst.Write(bytes.Repeat([]byte("}"), MaxRequestLine*3))
			burst.WriteByte('\n')
			lines++
		case 4:
			burst.WriteString("\x1b[2J\x00\x07")
			burst.WriteByte('\n')
			lines++
		}
	}
	// Written in odd-sized pieces, as a serial line would deliver it, while the answers are
	// read: the burst is larger than the pipes hold.
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for b := burst.Bytes(); len(b) > 0; {
			n := min(len(b), 1+len(b)%977)
			hs.send(string(b[:n]))
			b = b[n:]
		}
	}()
	for range lines {
		if r := hs.recv(); r.OK {
			t.Fatalf("garbage got an OK answer: %+v", r)
		}
	}
	<-sent
	r := hs.wantOK(`{"v":1,"id":77,"verb":"status"}`)
	if r.ID != 77 {
		t.Errorf("answer id %d, want 77", r.ID)
	}
}

// TestServePipelined: several requests in one write are answered in order.
func TestServePipelined(t *testing.T) {
	hs := serve(t, &fakeHandler{})
	hs.send(`{"v":1,"id":1,"verb":"status"}` + "\n" + `{"v":1,"id":2,"verb":"logs"}` + "\n" + `{"v":1,"id":3,"verb":"exec"}` + "\n")
	for id := uint64(1); id <= 3; id++ {
		if r := hs.recv(); r.ID != id || r.OK != (id < 3) {
			t.Errorf("answer %d = %+v", id, r)
		}
	}
}

// TestServeProgress: progress is reported while idle, at least once a second.
func TestServeProgress(t *testing.T) {
	hs := serve(t, &fakeHandler{})
	time.Sleep(1100 * time.Millisecond)
	if n := hs.progress.Load(); n < 2 {
		t.Errorf("progress reported %d times in 1.1 s of idleness, want at least 2", n)
	}
	before := hs.progress.Load()
	hs.wantOK(`{"v":1,"id":1,"verb":"status"}`)
	time.Sleep(10 * time.Millisecond)
	if hs.progress.Load() <= before {
		t.Error("no progress reported after a request")
	}
}

// serialPort is a scripted serial line: each step is data to read or a hang-up (EOF); after
// the script it reads from rest.
type serialPort struct {
	mu     sync.Mutex
	steps  []string // "" is a hang-up
	rest   io.Reader
	out    bytes.Buffer
	hangup int
}

func (p *serialPort) Read(b []byte) (int, error) {
	p.mu.Lock()
	if len(p.steps) == 0 {
		p.mu.Unlock()
		return p.rest.Read(b)
	}
	s := p.steps[0]
	p.steps = p.steps[1:]
	if s == "" {
		p.hangup++
		p.mu.Unlock()
		return 0, io.EOF
	}
	n := copy(b, s)
	if n < len(s) {
		p.steps = append([]string{s[n:]}, p.steps...)
	}
	p.mu.Unlock()
	return n, nil
}

func (p *serialPort) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *serialPort) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// TestServeHangup: EOF is a host hang-up, not the end. The half line before it is dropped
// (it would otherwise spoil the next client's first request) and serving goes on.
func TestServeHangup(t *testing.T) {
	restR, restW := io.Pipe()
	defer restW.Close()
	p := &serialPort{rest: restR, steps: []string{
		`{"v":1,"id":1,"verb":"sta`, "", "", "", // half a request, then the host hangs up
		`{"v":1,"id":2,"verb":"status"}` + "\n",
		strings.Repeat("x", MaxRequestLine+10), "", // half of an oversized line
		`{"v":1,"id":3,"verb":"logs"}` + "\n",
		"", "",
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, p, &fakeHandler{}, nil) }()
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(p.output(), "\n") < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// The server keeps reading after the hang-ups: a request arriving later is answered.
	restW.Write([]byte(`{"v":1,"id":4,"verb":"personas"}` + "\n"))
	for strings.Count(p.output(), "\n") < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Serve = %v, want context.Canceled", err)
	}
	var ids []uint64
	for _, l := range strings.Split(strings.TrimSuffix(p.output(), "\n"), "\n") {
		r, err := DecodeResponse([]byte(l))
		if err != nil || !r.OK {
			t.Errorf("answer %q: %+v %v", l, r, err)
		}
		ids = append(ids, r.ID)
	}
	if fmt.Sprint(ids) != "[2 3 4]" {
		t.Errorf("answered ids %v, want [2 3 4] (no answer for the dropped half lines)", ids)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hangup != 6 {
		t.Errorf("%d hang-ups read, want 6", p.hangup)
	}
}

// TestServeReadError: a read error other than EOF ends Serve with that error.
func TestServeReadError(t *testing.T) {
	boom := errors.New("device gone")
	err := Serve(context.Background(), struct {
		io.Reader
		io.Writer
	}{iotestErrReader{boom}, io.Discard}, &fakeHandler{}, nil)
	if !errors.Is(err, boom) {
		t.Errorf("Serve = %v, want %v", err, boom)
	}
}

type iotestErrReader struct{ err error }

func (r iotestErrReader) Read([]byte) (int, error) { return 0, r.err }

// shortWriter writes only the first n bytes of its first write and fails.
type shortWriter struct {
	n         int
	calls     int
	out       bytes.Buffer
	deadlines []time.Time
}

func (w *shortWriter) Write(b []byte) (int, error) {
	w.calls++
	if w.calls == 1 {
		w.out.Write(b[:w.n])
		return w.n, errors.New("write timeout")
	}
	return w.out.Write(b)
}

func (w *shortWriter) SetWriteDeadline(t time.Time) error {
	w.deadlines = append(w.deadlines, t)
	return nil
}

// TestAnswerWriterRepairsCut: after an answer was cut short, the next one starts on a new
// line so the client can resynchronise; every write runs under a deadline.
func TestAnswerWriterRepairsCut(t *testing.T) {
	sw := &shortWriter{n: 10}
	w := answerWriter{w: sw}
	first := errorLine(1, errors.New("first"))
	second := errorLine(2, errors.New("second"))
	w.write(first)
	w.write(second)
	want := string(first[:10]) + "\n" + string(second)
	if sw.out.String() != want {
		t.Errorf("wrote %q, want %q", sw.out.String(), want)
	}
	if w.cut {
		t.Error("cut still set after a whole answer")
	}
	if len(sw.deadlines) != 4 || sw.deadlines[0].IsZero() || !sw.deadlines[1].IsZero() {
		t.Errorf("deadlines %v, want set and cleared around each write", sw.deadlines)
	}
	// A write that fails without writing anything (no host connected) needs no repair.
	lost := answerWriter{w: &shortWriter{n: 0}}
	lost.write(first)
	if lost.cut {
		t.Error("a lost answer marked the line cut")
	}
}

// TestServeOversizedAnswer: an answer larger than MaxResponseLine becomes an error.
func TestServeOversizedAnswer(t *testing.T) {
	hs := serve(t, bigLogs{&fakeHandler{}})
	hs.wantError(`{"v":1,"id":1,"verb":"logs"}`, "more than 1048576")
	hs.wantOK(`{"v":1,"id":2,"verb":"status"}`)
}

type bigLogs struct{ *fakeHandler }

func (bigLogs) Logs(string, uint64) (LogsResult, error) {
	l := make([]string, 3000)
	for i := range l {
		l[i] = strings.Repeat("\"", 400)
	}
	return LogsResult{Lines: l}, nil
}

// TestServeEmptyLists: nil lists are answered as [], never null.
func TestServeEmptyLists(t *testing.T) {
	hs := serve(t, emptyHandler{&fakeHandler{}})
	if r := hs.wantOK(`{"v":1,"id":1,"verb":"personas"}`); string(r.Result) != `{"personas":[]}` {
		t.Errorf("personas = %s", r.Result)
	}
	if r := hs.wantOK(`{"v":1,"id":2,"verb":"logs"}`); string(r.Result) != `{"lines":[],"first":0,"next":0}` {
		t.Errorf("logs = %s", r.Result)
	}
}

type emptyHandler struct{ *fakeHandler }

func (emptyHandler) Personas() ([]PersonaInfo, error)        { return nil, nil }
func (emptyHandler) Logs(string, uint64) (LogsResult, error) { return LogsResult{}, nil }

// referenceLines splits a stream the way lineReader must: complete lines only, those longer
// than MaxRequestLine flagged, a trailing half line dropped.
func referenceLines(data []byte) []string {
	var out []string
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return out
		}
		if i > MaxRequestLine {
			out = append(out, "<too long>")
		} else {
			out = append(out, string(data[:i]))
		}
		data = data[i+1:]
	}
}

// FuzzLineReader: the bounded line splitter agrees with a plain split, whatever the chunking.
func FuzzLineReader(f *testing.F) {
	f.Add([]byte("a\nbb\n\nccc"), uint16(1))
	f.Add(append(bytes.Repeat([]byte("x"), MaxRequestLine+1), "\nok\n"...), uint16(4000))
	f.Add(append(bytes.Repeat([]byte("x"), MaxRequestLine), "\nok\n"...), uint16(7))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16) {
		lr := newLineReader(&chunkReader{data: data, n: int(chunk%5000) + 1})
		var got []string
		for {
			line, tooLong, err := lr.next()
			if errors.Is(err, errHangup) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if tooLong {
				got = append(got, "<too long>")
			} else {
				got = append(got, string(line))
			}
		}
		want := referenceLines(data)
		if fmt.Sprint(got) != fmt.Sprint(want) || len(got) != len(want) {
			t.Fatalf("lines %q, want %q", got, want)
		}
	})
}

// chunkReader delivers data n bytes at a time, then EOF.
type chunkReader struct {
	data []byte
	n    int
}

func (c *chunkReader) Read(b []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	k := copy(b, c.data[:min(c.n, len(c.data))])
	c.data = c.data[k:]
	return k, nil
}

// TestStatusJSON pins the wire names of the status result.
func TestStatusJSON(t *testing.T) {
	b, err := json.Marshal(testStatus())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"spine":"demo","version":3,"slot":"a","min_version":2,"slots":[{"slot":"a","state":"good","version":3,"tries_left":0,"reason":""},{"slot":"b","state":"bad","version":4,"tries_left":0,"reason":"verity: root hash mismatch"}],"kernel":{"release":"6.1.192-spine","version":"#1 SMP Thu Jan  1 00:00:00 UTC 2026","sha256":"93dc"},"uptime_ms":12345,"persist_mounted":true,"watchdog":{"enabled":true,"timeout_ms":10000,"since_feed_ms":400},"last_reset":"fatal: persona supervisor: deadlock","committed":false,"missing":["persona web waiting: could not start: no eth0"],"boot":[{"name":"stage1: setup","ms":310},{"name":"persist","ms":2200}]}`
	if string(b) != want {
		t.Errorf("status JSON\n got %s\nwant %s", b, want)
	}
	b, _ = json.Marshal(testPersonas()[0])
	want = `{"name":"web","state":"running","pid":212,"restarts":1,"limits":{"cpu.max":"50000 100000","memory.max":"67108864","pids.max":"64"},"last_exit":"exit status 1"}`
	if string(b) != want {
		t.Errorf("persona JSON\n got %s\nwant %s", b, want)
	}
}

func ptr[T any](v T) *T { return &v }

// fetchingHandler is a Handler that fetches updates through a courier.
type fetchingHandler struct {
	fakeHandler
	release chan struct{}
}

func (f *fetchingHandler) UpdateFrom(req Request, progress func()) (any, error) {
	f.record("update-from " + req.Source)
	<-f.release
	progress()
	if strings.Contains(req.Source, "/bad@") {
		return nil, errors.New("the courier sent other bytes")
	}
	return map[string]any{"state": "staged"}, nil
}

const source = "oci://10.0.2.2:5000/spines/demo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestServeFetcher(t *testing.T) {
	f := &fetchingHandler{release: make(chan struct{})}
	hs := serve(t, f)
	// The transfer runs off the loop: the loop keeps reporting progress meanwhile, and a
	// request sent behind it is answered after it, in order.
	hs.send(`{"v":1,"id":1,"verb":"update","source":"` + source + `"}` + "\n")
	hs.send(`{"v":1,"id":2,"verb":"status"}` + "\n")
	before := hs.progress.Load()
	deadline := time.Now().Add(5 * time.Second)
	for hs.progress.Load() < before+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if hs.progress.Load() < before+2 {
		t.Fatal("no progress while the courier worked")
	}
	close(f.release)
	if r := hs.recv(); !r.OK || r.ID != 1 || !strings.Contains(string(r.Result), "staged") {
		t.Fatalf("update answer %+v", r)
	}
	if r := hs.recv(); !r.OK || r.ID != 2 {
		t.Fatalf("status answer %+v", r)
	}
	hs.wantError(`{"v":1,"id":3,"verb":"update","source":"`+strings.Replace(source, "/demo@", "/bad@", 1)+`"}`, "other bytes")

	// Sources are checked before any handler sees them.
	hs.wantError(`{"v":1,"id":4,"verb":"update","source":"oci://10.0.2.2:5000/spines/demo:v2"}`, "names no digest")
	hs.wantError(`{"v":1,"id":5,"verb":"update","source":"`+source+`","size":5}`, "either a source or an offer")
	hs.wantError(`{"v":1,"id":6,"verb":"status","source":"`+source+`"}`, "field not allowed")
}

func TestServeSourceWithoutFetcher(t *testing.T) {
	hs := serve(t, &updatingHandler{})
	hs.wantError(`{"v":1,"id":1,"verb":"update","source":"`+source+`"}`, "not supported")
}
