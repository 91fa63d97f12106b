// Package probe makes a persona's health check from bay0's side: a TCP connection, or an HTTP
// GET, to a port inside the persona's own network namespace. The socket is made in that
// namespace (by a thread that enters it and then dies with its goroutine, so no other goroutine
// of PID 1 ever runs in a persona's network); nothing runs inside the persona, and the persona
// needs no route to bay0.
//
// It speaks raw sockets rather than package net, which bay0 does not link.
package probe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Target is what a check reaches: Port at Addr in the network namespace of the process PID,
// with an HTTP GET of Path when Path is set.
type Target struct {
	PID  int
	Addr netip.Addr
	Port int
	Path string
}

// maxAnswer bounds what is read of an HTTP answer: its status line is all that counts.
const maxAnswer = 4096

// Check makes one check of t until ctx ends: nil when the port took the connection (and, for
// HTTP, answered with a 2xx or 3xx status), else why not.
func Check(ctx context.Context, t Target) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Second)
	}
	fd, err := socketIn(t.PID, t.Addr)
	if err != nil {
		return err
	}
	// Closed with a reset, never left in TIME_WAIT or orphaned in FIN_WAIT: a socket that
	// outlived the check could keep the persona's network namespace, and with it the MAC
	// address of its uplink, alive after the persona is gone, so that its next instance could
	// not bring its uplink up (EADDRINUSE).
	defer func() {
		_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		unix.Close(fd)
	}()
	where := netip.AddrPortFrom(t.Addr, uint16(t.Port)).String()
	if err := connect(fd, t.Addr, t.Port, deadline); err != nil {
		return fmt.Errorf("connect %s: %w", where, err)
	}
	if t.Path == "" {
		return nil
	}
	req := "GET " + t.Path + " HTTP/1.0\r\nHost: " + where + "\r\nUser-Agent: bay0-health\r\nConnection: close\r\n\r\n"
	if err := writeAll(fd, []byte(req), deadline); err != nil {
		return fmt.Errorf("http %s%s: %w", where, t.Path, err)
	}
	line, err := readLine(fd, deadline)
	if err != nil {
		return fmt.Errorf("http %s%s: %w", where, t.Path, err)
	}
	code, err := statusCode(line)
	if err != nil {
		return fmt.Errorf("http %s%s: %w", where, t.Path, err)
	}
	if code < 200 || code > 399 {
		return fmt.Errorf("http %s%s: status %d", where, t.Path, code)
	}
	return nil
}

// socketIn makes a non-blocking TCP socket in the network namespace of pid. The thread that
// enters the namespace is locked and never unlocked: it ends with its goroutine.
func socketIn(pid int, addr netip.Addr) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{-1, fmt.Errorf("network of pid %d: %w", pid, err)}
			return
		}
		err = unix.Setns(ns, unix.CLONE_NEWNET)
		unix.Close(ns)
		if err != nil {
			ch <- result{-1, fmt.Errorf("enter the network of pid %d: %w", pid, err)}
			return
		}
		family := unix.AF_INET
		if addr.Is6() {
			family = unix.AF_INET6
		}
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			err = fmt.Errorf("socket: %w", err)
		}
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

func connect(fd int, addr netip.Addr, port int, deadline time.Time) error {
	var sa unix.Sockaddr
	if addr.Is4() {
		sa = &unix.SockaddrInet4{Port: port, Addr: addr.As4()}
	} else {
		sa = &unix.SockaddrInet6{Port: port, Addr: addr.As16()}
	}
	err := unix.Connect(fd, sa)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINPROGRESS) {
		return err
	}
	if err := wait(fd, unix.POLLOUT, deadline); err != nil {
		return err
	}
	errno, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if errno != 0 {
		return unix.Errno(errno)
	}
	return nil
}

// errTimeout is a check that ran out of time.
var errTimeout = errors.New("timed out")

// wait polls fd for events until deadline.
func wait(fd int, events int16, deadline time.Time) error {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return errTimeout
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
	}
}

// errClosed is a server that ended the connection without answering the request.
var errClosed = errors.New("closed without an answer")

func writeAll(fd int, b []byte, deadline time.Time) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EAGAIN) {
			if err := wait(fd, unix.POLLOUT, deadline); err != nil {
				return err
			}
			continue
		}
		if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET) {
			return errClosed
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// readLine reads up to the first line's end (or maxAnswer bytes, or the end of the answer).
func readLine(fd int, deadline time.Time) ([]byte, error) {
	buf := make([]byte, 0, maxAnswer)
	for len(buf) < maxAnswer {
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			return buf[:i], nil
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		switch {
		case errors.Is(err, unix.EAGAIN):
			if err := wait(fd, unix.POLLIN, deadline); err != nil {
				return nil, err
			}
			continue
		case errors.Is(err, unix.ECONNRESET) && len(buf) == 0:
			// A server that closes before reading the request resets the connection.
			return nil, errClosed
		case err != nil:
			return nil, err
		case n == 0:
			if len(buf) == 0 {
				return nil, errClosed
			}
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
	return buf, nil
}

// statusCode reads the code of an HTTP status line, "HTTP/1.1 200 OK".
func statusCode(line []byte) (int, error) {
	f := bytes.Fields(line)
	if len(f) < 2 || !bytes.HasPrefix(f[0], []byte("HTTP/")) || len(f[1]) != 3 {
		return 0, fmt.Errorf("not an HTTP answer: %q", truncate(line, 64))
	}
	code, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return 0, fmt.Errorf("not an HTTP status: %q", f[1])
	}
	return code, nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
