package control

import (
	"alpinespine.org/spine/internal/bay0/update"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakePort stands for QEMU's virtio-serial port backed by a unix socket server: one serial
// stream for the guest across any number of host connections. Like the real port, a read
// with no host connected returns EOF at once, and the data of a host that went away ends
// with an EOF.
type fakePort struct {
	mu   sync.Mutex
	conn net.Conn
	wait chan struct{} // closed when a host connects
}

func newFakePort(t *testing.T, path string) *fakePort {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	p := &fakePort{wait: make(chan struct{})}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conn = c
			close(p.wait)
			p.wait = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		if p.conn != nil {
			p.conn.Close()
		}
		p.mu.Unlock()
	})
	return p
}

func (p *fakePort) Read(b []byte) (int, error) {
	p.mu.Lock()
	c := p.conn
	p.mu.Unlock()
	if c == nil {
		return 0, io.EOF
	}
	n, err := c.Read(b)
	if err != nil {
		p.mu.Lock()
		if p.conn == c {
			p.conn = nil
		}
		p.mu.Unlock()
		c.Close()
		return n, io.EOF
	}
	return n, nil
}

func (p *fakePort) Write(b []byte) (int, error) {
	p.mu.Lock()
	c := p.conn
	p.mu.Unlock()
	if c == nil {
		return 0, errors.New("no host connected")
	}
	return c.Write(b)
}

func servePort(t *testing.T, h Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	p := newFakePort(t, sock)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, p, h, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Serve = %v", err)
		}
	})
	return sock
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestClientServerUnixSocket: every verb over a real unix socket, and a client that comes
// back after the line was left in any state by an earlier one.
func TestClientServerUnixSocket(t *testing.T) {
	h := &fakeHandler{}
	sock := servePort(t, h)
	ctx := testCtx(t)

	c, err := Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Call(ctx, Request{Verb: VerbStatus})
	if err != nil {
		t.Fatal(err)
	}
	var st StatusInfo
	if err := resp.Decode(&st); err != nil || st.Spine != "demo" {
		t.Fatalf("status = %+v, %v", st, err)
	}
	for _, v := range Verbs() {
		req := Request{Verb: v}
		if v.TakesName() {
			req.Name = "web"
		}
		if v == VerbUpdate {
			req.Offer, req.Size = &update.Offer{Footer: []byte{1}, Manifest: []byte("m"), Signature: []byte{2}}, 1
		}
		resp, err := c.Call(ctx, req)
		if v == VerbUpdate {
			var re *RemoteError
			if !errors.As(err, &re) || !strings.Contains(re.Message, "not supported") || resp.OK {
				t.Errorf("update: %+v, %v; want a RemoteError", resp, err)
			}
			continue
		}
		if err != nil || !resp.OK {
			t.Errorf("%s: %+v, %v", v, resp, err)
		}
	}
	// The client leaves half a request on the line and hangs up.
	if _, err := c.conn.Write([]byte(`{"v":1,"id":99,"verb":"reb`)); err != nil {
		t.Fatal(err)
	}
	c.Close()

	for round := range 3 {
		c, err := Dial(sock)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Call(ctx, Request{Verb: VerbLogs}); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		c.Close()
	}
	if n := strings.Count(strings.Join(h.Calls(), ","), "reboot"); n != 1 {
		t.Errorf("reboot called %d times, want 1 (the half request must not run)", n)
	}
}

// TestClientSkipsNoise: stale answers, error answers to earlier noise and garbage lines are
// skipped until the answer to this request arrives.
func TestClientSkipsNoise(t *testing.T) {
	client, server := net.Pipe()
	c := newClient(client)
	c.last = 0 // the next request is id 1
	defer c.Close()
	go func() {
		buf := make([]byte, 4096)
		n, _ := server.Read(buf) // the request
		if !strings.Contains(string(buf[:n]), `"id":1,`) {
			server.Write([]byte("unexpected request\n"))
		}
		server.Write([]byte("\n" + `{"v":1,"id":0,"ok":false,"error":"malformed JSON"}` + "\n" +
			"\x00garbage\n" + `{"v":1,"id":7,"ok":true,"result":{}}` + "\n" +
			`{"v":1,"id":1,"ok":true,"result":{"lines":["x"]}}` + "\n"))
	}()
	resp, err := c.Call(testCtx(t), Request{Verb: VerbLogs})
	if err != nil {
		t.Fatal(err)
	}
	var l LogsResult
	if err := resp.Decode(&l); err != nil || len(l.Lines) != 1 {
		t.Errorf("logs = %+v, %v", l, err)
	}
}

// TestClientTimeout: a governor that never answers makes Call fail when ctx ends.
func TestClientTimeout(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	go io.Copy(io.Discard, server)
	c := newClient(client)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Call(ctx, Request{Verb: VerbStatus})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Call = %v, want DeadlineExceeded", err)
	}
}

// TestClientRefusesBadRequest: the client does not send what the governor would refuse.
func TestClientRefusesBadRequest(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := newClient(client)
	defer c.Close()
	for _, req := range []Request{{Verb: "exec"}, {Verb: VerbStop}, {Verb: VerbStatus, Name: "x"}, {V: 9, Verb: VerbStatus}} {
		if _, err := c.Call(testCtx(t), req); err == nil {
			t.Errorf("Call(%+v) succeeded", req)
		}
	}
}

// TestClientIDsDiffer: two clients of the same line do not both start counting at 1.
func TestClientIDsDiffer(t *testing.T) {
	a, b := newClient(nil), newClient(nil)
	if a.last == b.last || a.last >= 1<<48 {
		t.Errorf("first IDs %d and %d: want distinct 48-bit values", a.last, b.last)
	}
}

func TestDialMissingSocket(t *testing.T) {
	if _, err := Dial(filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Error("Dial of a missing socket succeeded")
	}
}
