package ctlclient

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"alpinespine.org/spine/internal/bay0/control"
)

// TestClientIDsDiffer: two clients of the same line do not both start counting at 1.
func TestClientIDsDiffer(t *testing.T) {
	a, b := New(nil), New(nil)
	if a.last == b.last || a.last >= 1<<48 {
		t.Errorf("first IDs %d and %d: want distinct 48-bit values", a.last, b.last)
	}
}

func TestDialMissingSocket(t *testing.T) {
	if _, err := Dial(filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Error("Dial of a missing socket succeeded")
	}
}

// TestClientSkipsNoise: stale answers, error answers to earlier noise and garbage lines are
// skipped until the answer to this request arrives.
func TestClientSkipsNoise(t *testing.T) {
	client, server := net.Pipe()
	c := New(client)
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
	resp, err := c.Call(testCtx(t), control.Request{Verb: control.VerbLogs})
	if err != nil {
		t.Fatal(err)
	}
	var l control.LogsResult
	if err := resp.Decode(&l); err != nil || len(l.Lines) != 1 {
		t.Errorf("logs = %+v, %v", l, err)
	}
}

// TestClientTimeout: a governor that never answers makes Call fail when ctx ends.
func TestClientTimeout(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	go io.Copy(io.Discard, server)
	c := New(client)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Call(ctx, control.Request{Verb: control.VerbStatus})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Call = %v, want DeadlineExceeded", err)
	}
}

// TestClientRefusesBadRequest: the client does not send what the governor would refuse.
func TestClientRefusesBadRequest(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	c := New(client)
	defer c.Close()
	for _, req := range []control.Request{{Verb: "exec"}, {Verb: control.VerbStop}, {Verb: control.VerbStatus, Name: "x"}, {V: 9, Verb: control.VerbStatus}} {
		if _, err := c.Call(testCtx(t), req); err == nil {
			t.Errorf("Call(%+v) succeeded", req)
		}
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestDialTCP: a control line carried over TCP (a console server) speaks the same protocol.
func TestDialTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		for {
			line, err := br.ReadBytes('\n')
			if err != nil {
				return
			}
			req, err := control.DecodeRequest(line)
			if err != nil {
				continue // the blank line Dial sends first
			}
			fmt.Fprintf(conn, `{"v":1,"id":%d,"ok":true,"result":{"spine":"demo","version":4}}`+"\n", req.ID)
		}
	}()
	c, err := Dial("tcp://" + l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Call(testCtx(t), control.Request{Verb: control.VerbStatus})
	if err != nil {
		t.Fatal(err)
	}
	var s control.StatusInfo
	if err := resp.Decode(&s); err != nil || s.Version != 4 {
		t.Fatalf("status over tcp: %+v, %v", s, err)
	}
	for _, bad := range []string{"http://x", "tcp://", "unix://"} {
		if _, err := Dial(bad); err == nil {
			t.Errorf("Dial(%q) succeeded", bad)
		}
	}
}
