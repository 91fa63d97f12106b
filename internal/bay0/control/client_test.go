package control_test

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/bay0/update"
	"alpinespine.org/spine/internal/host/ctlclient"
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

func servePort(t *testing.T, h control.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	p := newFakePort(t, sock)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.Serve(ctx, p, h, nil) }()
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
	h := &control.FakeHandler{}
	sock := servePort(t, h)
	ctx := testCtx(t)

	c, err := ctlclient.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Call(ctx, control.Request{Verb: control.VerbStatus})
	if err != nil {
		t.Fatal(err)
	}
	var st control.StatusInfo
	if err := resp.Decode(&st); err != nil || st.Spine != "demo" {
		t.Fatalf("status = %+v, %v", st, err)
	}
	for _, v := range control.Verbs() {
		req := control.Request{Verb: v}
		if v.TakesName() {
			req.Name = "web"
		}
		if v == control.VerbUpdate {
			req.Offer, req.Size = &update.Offer{Footer: []byte{1}, Manifest: []byte("m"), Signature: []byte{2}}, 1
		}
		resp, err := c.Call(ctx, req)
		if v == control.VerbUpdate {
			var re *ctlclient.RemoteError
			if !errors.As(err, &re) || !strings.Contains(re.Message, "not supported") || resp.OK {
				t.Errorf("update: %+v, %v; want a RemoteError", resp, err)
			}
			continue
		}
		if err != nil || !resp.OK {
			t.Errorf("%s: %+v, %v", v, resp, err)
		}
	}
	c.Close()
	// A client leaves half a request on the line and hangs up.
	raw, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Write([]byte(`{"v":1,"id":99,"verb":"reb`)); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	for round := range 3 {
		c, err := ctlclient.Dial(sock)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Call(ctx, control.Request{Verb: control.VerbLogs}); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		c.Close()
	}
	if n := strings.Count(strings.Join(h.Calls(), ","), "reboot"); n != 1 {
		t.Errorf("reboot called %d times, want 1 (the half request must not run)", n)
	}
}
