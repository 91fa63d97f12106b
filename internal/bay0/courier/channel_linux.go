package courier

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/format/courier"
)

// Channel is bay0's end of the courier persona's channel: a unix seqpacket socket on which
// each request goes out with a socket made for that one transfer.
type Channel struct {
	f *os.File
}

// NewChannel makes the channel; the second file is the persona's end, handed to every
// instance of the courier persona (persona.Spec.Courier).
func NewChannel() (*Channel, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("courier channel: socketpair: %w", err)
	}
	return &Channel{f: os.NewFile(uintptr(fds[0]), "courier channel")}, os.NewFile(uintptr(fds[1]), "courier channel (persona end)"), nil
}

// Open asks the courier for ref and returns bay0's end of the transfer socket. Sending does
// not wait: a courier that is not reading has its transfer time out on the first read.
func (c *Channel) Open(ref courier.Ref) (*os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("courier transfer: socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "courier transfer")
	defer unix.Close(fds[1])
	msg, err := json.Marshal(courier.Request{Ref: ref.String()})
	if err != nil {
		ours.Close()
		return nil, err
	}
	rc, err := c.f.SyscallConn()
	if err != nil {
		ours.Close()
		return nil, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.Sendmsg(int(fd), msg, unix.UnixRights(fds[1]), nil, unix.MSG_DONTWAIT)
	}); err != nil {
		serr = err
	}
	if serr != nil {
		ours.Close()
		return nil, fmt.Errorf("courier transfer: hand the socket to the courier: %w", serr)
	}
	return ours, nil
}

// Close closes bay0's end.
func (c *Channel) Close() error { return c.f.Close() }

// StallReader reads f, failing a read that waits longer than stall, and calls progress after
// every read: a courier that stops sending fails the transfer instead of holding it forever.
type StallReader struct {
	F        *os.File
	Stall    time.Duration
	Progress func()
}

func (s *StallReader) Read(p []byte) (int, error) {
	if err := s.F.SetReadDeadline(time.Now().Add(s.Stall)); err != nil {
		return 0, err
	}
	n, err := s.F.Read(p)
	if s.Progress != nil {
		s.Progress()
	}
	if os.IsTimeout(err) {
		return n, fmt.Errorf("the courier sent nothing for %s: %w", s.Stall, err)
	}
	return n, err
}

var _ io.Reader = (*StallReader)(nil)
