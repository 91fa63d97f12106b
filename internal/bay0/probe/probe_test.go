package probe

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// serve answers each connection on a fresh loopback port with answer ("" never answers,
// "close" closes at once).
func serve(t *testing.T, answer string) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if answer == "close" {
					return
				}
				line, _ := bufio.NewReader(c).ReadString('\n')
				if !strings.HasPrefix(line, "GET /healthz HTTP/1.0") {
					c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n"))
					return
				}
				if answer == "" {
					time.Sleep(2 * time.Second)
					return
				}
				c.Write([]byte(answer))
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// TestCheck: the check enters the network of a process (here its own, as root) and tells a
// listening port from a closed one, a 2xx/3xx answer from the rest, and gives up at the deadline.
func TestCheck(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("entering a network namespace needs root; the suite runs as root")
	}
	lo := netip.MustParseAddr("127.0.0.1")
	closed := serve(t, "close")
	for _, tc := range []struct {
		name   string
		target Target
		want   string
	}{
		{"tcp open", Target{Port: closed}, ""},
		{"http 200", Target{Port: serve(t, "HTTP/1.1 200 OK\r\n\r\nok"), Path: "/healthz"}, ""},
		{"http 302", Target{Port: serve(t, "HTTP/1.0 302 Found\r\n\r\n"), Path: "/healthz"}, ""},
		{"http 503", Target{Port: serve(t, "HTTP/1.1 503 Service Unavailable\r\n\r\n"), Path: "/healthz"}, "status 503"},
		{"not http", Target{Port: serve(t, "+PONG\r\n"), Path: "/healthz"}, "not an HTTP answer"},
		{"http closed", Target{Port: closed, Path: "/healthz"}, "closed without an answer"},
		{"http silent", Target{Port: serve(t, ""), Path: "/healthz"}, "timed out"},
		{"tcp refused", Target{Port: 1}, "connection refused"},
		{"no such process", Target{PID: 1 << 30, Port: closed}, "network of pid"},
	} {
		tc.target.Addr = lo
		if tc.target.PID == 0 {
			tc.target.PID = os.Getpid()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := Check(ctx, tc.target)
		cancel()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
