package netlink

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Conn is a NETLINK_ROUTE socket that sends one request at a time and waits for its ack.
type Conn struct {
	fd  int
	seq uint32
}

// Dial opens a NETLINK_ROUTE socket in the caller's network namespace.
func Dial() (*Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind netlink socket: %w", err)
	}
	return &Conn{fd: fd}, nil
}

// Close closes the socket.
func (c *Conn) Close() error { return unix.Close(c.fd) }

// AddMacvlan creates the macvlan device l.
func (c *Conn) AddMacvlan(l Macvlan) error {
	return c.do("add macvlan "+l.Name, func(seq uint32) ([]byte, error) { return NewMacvlanRequest(seq, l) })
}

// SetUp brings the link index up.
func (c *Conn) SetUp(index int) error {
	return c.do(fmt.Sprintf("bring link %d up", index), func(seq uint32) ([]byte, error) { return SetUpRequest(seq, index), nil })
}

// Rename renames the link index, which must be down.
func (c *Conn) Rename(index int, name string) error {
	return c.do("rename link to "+name, func(seq uint32) ([]byte, error) { return RenameRequest(seq, index, name) })
}

// AddAddr puts the address p on the link index.
func (c *Conn) AddAddr(index int, p netip.Prefix) error {
	return c.do("add address "+p.String(), func(seq uint32) ([]byte, error) { return AddAddrRequest(seq, index, p) })
}

// AddRoute adds the route r.
func (c *Conn) AddRoute(r Route) error {
	what := fmt.Sprintf("add route to %v via %v", r.Dst, r.Gateway)
	if r.Unreachable {
		what = fmt.Sprintf("add unreachable route to %v", r.Dst)
	}
	return c.do(what, func(seq uint32) ([]byte, error) { return AddRouteRequest(seq, r) })
}

func (c *Conn) do(what string, req func(seq uint32) ([]byte, error)) error {
	c.seq++
	b, err := req(c.seq)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := unix.Sendto(c.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("%s: send: %w", what, err)
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			return fmt.Errorf("%s: receive: %w", what, err)
		}
		err = ParseAck(buf[:n], c.seq)
		if errors.Is(err, ErrNoAck) {
			continue // an answer to something else: keep reading
		}
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
}
