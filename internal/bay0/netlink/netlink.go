// Package netlink encodes the few rtnetlink requests bay0 needs to give a persona an uplink
// (a macvlan device in its network namespace, its addresses, the link up, its routes) and
// reads the kernel's answers. It is deliberately not a general netlink library.
package netlink

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// macvlanModePrivate is MACVLAN_MODE_PRIVATE (linux/if_link.h): a macvlan in this mode
// exchanges nothing with its siblings on the same card, not unicast, not broadcast, not
// multicast, even when an outside switch reflects frames back (the kernel hands a reflected
// broadcast only to its sender).
const macvlanModePrivate = 1

// ifaFlagNoDAD is IFA_F_NODAD (linux/if_addr.h): an IPv6 address given by the policy is used at
// once, without a second of duplicate address detection first.
const ifaFlagNoDAD = 0x02

// MaxNameLen is the longest interface name the kernel accepts (IFNAMSIZ less the NUL).
const MaxNameLen = unix.IFNAMSIZ - 1

const requestFlags = unix.NLM_F_REQUEST | unix.NLM_F_ACK

// Macvlan describes a macvlan device in private mode, made on the parent link and created
// directly in the network namespace of NetnsPID.
type Macvlan struct {
	// Name is the device's name. The kernel checks it against the caller's namespace too, so
	// it must be free there as well; the final name is given in the target namespace.
	Name string
	// Parent is the ifindex of the lower device, in the caller's namespace.
	Parent int
	// NetnsPID is a process whose network namespace receives the device.
	NetnsPID int
	// MAC is the device's hardware address: unicast and locally administered.
	MAC [6]byte
}

// NewMacvlanRequest encodes RTM_NEWLINK for l.
func NewMacvlanRequest(seq uint32, l Macvlan) ([]byte, error) {
	if l.Name == "" || len(l.Name) > MaxNameLen {
		return nil, fmt.Errorf("macvlan name %q is empty or longer than %d bytes", l.Name, MaxNameLen)
	}
	if l.Parent <= 0 || l.NetnsPID <= 0 {
		return nil, fmt.Errorf("macvlan %q: bad parent %d or pid %d", l.Name, l.Parent, l.NetnsPID)
	}
	if l.MAC[0]&1 != 0 || l.MAC[0]&2 == 0 {
		return nil, fmt.Errorf("macvlan %q: address %x is not a locally administered unicast address", l.Name, l.MAC)
	}
	info := attr(unix.IFLA_INFO_KIND, []byte("macvlan"))
	info = append(info, attr(unix.IFLA_INFO_DATA, attr(unix.IFLA_MACVLAN_MODE, u32(macvlanModePrivate)))...)
	body := ifinfomsg(0, 0, 0)
	body = append(body, attr(unix.IFLA_IFNAME, append([]byte(l.Name), 0))...)
	body = append(body, attr(unix.IFLA_ADDRESS, l.MAC[:])...)
	body = append(body, attr(unix.IFLA_LINK, u32(uint32(l.Parent)))...)
	body = append(body, attr(unix.IFLA_NET_NS_PID, u32(uint32(l.NetnsPID)))...)
	body = append(body, attr(unix.IFLA_LINKINFO, info)...)
	return message(unix.RTM_NEWLINK, requestFlags|unix.NLM_F_CREATE|unix.NLM_F_EXCL, seq, body), nil
}

// SetUpRequest encodes RTM_NEWLINK that sets IFF_UP on the link index.
func SetUpRequest(seq uint32, index int) []byte {
	return message(unix.RTM_NEWLINK, requestFlags, seq, ifinfomsg(index, unix.IFF_UP, unix.IFF_UP))
}

// RenameRequest encodes RTM_NEWLINK that renames the link index, which must be down.
func RenameRequest(seq uint32, index int, name string) ([]byte, error) {
	if name == "" || len(name) > MaxNameLen {
		return nil, fmt.Errorf("interface name %q is empty or longer than %d bytes", name, MaxNameLen)
	}
	body := append(ifinfomsg(index, 0, 0), attr(unix.IFLA_IFNAME, append([]byte(name), 0))...)
	return message(unix.RTM_NEWLINK, requestFlags, seq, body), nil
}

// AddAddrRequest encodes RTM_NEWADDR putting the address p (IPv4 or IPv6) on the link index.
// An IPv6 address skips duplicate address detection: the policy gave it.
func AddAddrRequest(seq uint32, index int, p netip.Prefix) ([]byte, error) {
	if !p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return nil, fmt.Errorf("address %v is not an IPv4 or IPv6 prefix", p)
	}
	a := p.Addr().AsSlice()
	family, flags := byte(unix.AF_INET), byte(0)
	if p.Addr().Is6() {
		family, flags = unix.AF_INET6, ifaFlagNoDAD
	}
	body := []byte{family, byte(p.Bits()), flags, unix.RT_SCOPE_UNIVERSE}
	body = binary.NativeEndian.AppendUint32(body, uint32(index))
	body = append(body, attr(unix.IFA_LOCAL, a)...)
	body = append(body, attr(unix.IFA_ADDRESS, a)...)
	return message(unix.RTM_NEWADDR, requestFlags|unix.NLM_F_CREATE|unix.NLM_F_EXCL, seq, body), nil
}

// Route is one route of the main table: Dst (0.0.0.0/0 or ::/0 for a default route) via
// Gateway on link Index, or, with Unreachable, a route that refuses Dst outright.
type Route struct {
	Dst         netip.Prefix
	Gateway     netip.Addr
	Index       int
	Unreachable bool
}

// AddRouteRequest encodes RTM_NEWROUTE for r.
func AddRouteRequest(seq uint32, r Route) ([]byte, error) {
	if !r.Dst.IsValid() || r.Dst.Addr().Zone() != "" || r.Dst != r.Dst.Masked() {
		return nil, fmt.Errorf("route destination %v is not a network", r.Dst)
	}
	family := byte(unix.AF_INET)
	if r.Dst.Addr().Is6() {
		family = unix.AF_INET6
	}
	typ := byte(unix.RTN_UNICAST)
	if r.Unreachable {
		if r.Gateway.IsValid() || r.Index != 0 {
			return nil, fmt.Errorf("unreachable route to %v has a gateway or a link", r.Dst)
		}
		typ = unix.RTN_UNREACHABLE
	} else if !r.Gateway.IsValid() || r.Gateway.Is6() != r.Dst.Addr().Is6() || r.Gateway.Zone() != "" || r.Index <= 0 {
		return nil, fmt.Errorf("route to %v: gateway %v on link %d is not of its family", r.Dst, r.Gateway, r.Index)
	}
	// rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
	body := []byte{family, byte(r.Dst.Bits()), 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, unix.RT_SCOPE_UNIVERSE, typ}
	body = binary.NativeEndian.AppendUint32(body, 0)
	if r.Dst.Bits() > 0 {
		body = append(body, attr(unix.RTA_DST, r.Dst.Addr().AsSlice())...)
	}
	if !r.Unreachable {
		body = append(body, attr(unix.RTA_GATEWAY, r.Gateway.AsSlice())...)
		body = append(body, attr(unix.RTA_OIF, u32(uint32(r.Index)))...)
	}
	return message(unix.RTM_NEWROUTE, requestFlags|unix.NLM_F_CREATE|unix.NLM_F_EXCL, seq, body), nil
}

// ErrNoAck is an answer that holds no acknowledgement of the request.
var ErrNoAck = errors.New("netlink: no acknowledgement")

// ParseAck looks for the NLMSG_ERROR answer to request seq in b, one datagram from the
// kernel. It returns nil for an acknowledgement, the kernel's errno for a refusal, ErrNoAck if
// b holds no answer to seq, and an error for a malformed datagram.
func ParseAck(b []byte, seq uint32) error {
	for len(b) > 0 {
		if len(b) < unix.SizeofNlMsghdr {
			return fmt.Errorf("netlink: short message header (%d bytes)", len(b))
		}
		n := binary.NativeEndian.Uint32(b[0:4])
		typ := binary.NativeEndian.Uint16(b[4:6])
		s := binary.NativeEndian.Uint32(b[8:12])
		if n < unix.SizeofNlMsghdr || uint64(n) > uint64(len(b)) {
			return fmt.Errorf("netlink: message length %d of %d bytes", n, len(b))
		}
		if typ == unix.NLMSG_ERROR && s == seq {
			if n < unix.SizeofNlMsghdr+4 {
				return errors.New("netlink: short error message")
			}
			code := int32(binary.NativeEndian.Uint32(b[unix.SizeofNlMsghdr:]))
			if code == 0 {
				return nil
			}
			return syscall.Errno(-code)
		}
		b = b[min(align(int(n)), len(b)):]
	}
	return ErrNoAck
}

func message(typ, flags uint16, seq uint32, body []byte) []byte {
	b := make([]byte, 0, unix.SizeofNlMsghdr+len(body))
	b = binary.NativeEndian.AppendUint32(b, uint32(unix.SizeofNlMsghdr+len(body)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0) // port id: the kernel fills it in
	return append(b, body...)
}

func ifinfomsg(index int, flags, change uint32) []byte {
	b := []byte{unix.AF_UNSPEC, 0, 0, 0} // family, pad, type
	b = binary.NativeEndian.AppendUint32(b, uint32(int32(index)))
	b = binary.NativeEndian.AppendUint32(b, flags)
	return binary.NativeEndian.AppendUint32(b, change)
}

// attr encodes one rtattr, padded to 4 bytes.
func attr(typ uint16, data []byte) []byte {
	b := make([]byte, 0, align(4+len(data)))
	b = binary.NativeEndian.AppendUint16(b, uint16(4+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func align(n int) int { return (n + 3) &^ 3 }

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
