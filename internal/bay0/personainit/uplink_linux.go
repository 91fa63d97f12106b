package personainit

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/launch"
	"alpinespine.org/spine/internal/bay0/netlink"
)

// uplinkUp configures the macvlan device the governor put in this network namespace under the
// name u.Device: its name UplinkName, the namespace's settings (launch.UplinkSysctls), its
// addresses, the link up, then the routes, which the kernel refuses on a link that is down: the
// default routes and an unreachable route to each sibling. persona-init is root of the user
// namespace that owns the network namespace, so it has CAP_NET_ADMIN here and nowhere else.
//
// Precondition: /proc is still the governor's (before setupRoot): its /proc/sys/net shows the
// caller's own network namespace, and is writable.
func uplinkUp(u *launch.Uplink) error {
	if u == nil {
		return nil
	}
	a, err := u.Parse()
	if err != nil {
		return err
	}
	index, err := ifindex(u.Device)
	if err != nil {
		return err
	}
	c, err := netlink.Dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Rename(index, launch.UplinkName); err != nil {
		return err
	}
	ipv6 := a.Addr6.IsValid()
	for _, s := range launch.UplinkSysctls(ipv6) {
		err := os.WriteFile("/proc/sys/"+s.Path, []byte(s.Value), 0)
		if err != nil && !(errors.Is(err, fs.ErrNotExist) && !ipv6 && strings.HasPrefix(s.Path, "net/ipv6/")) {
			// A kernel without IPv6 has nothing to turn off.
			return fmt.Errorf("set %s: %w", s.Path, err)
		}
	}
	routes := []netlink.Route{}
	for _, p := range []netip.Prefix{a.Addr, a.Addr6} {
		if !p.IsValid() {
			continue
		}
		if err := c.AddAddr(index, p); err != nil {
			return err
		}
	}
	if a.Gw.IsValid() {
		routes = append(routes, netlink.Route{Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Gateway: a.Gw, Index: index})
	}
	if a.Gw6.IsValid() {
		routes = append(routes, netlink.Route{Dst: netip.PrefixFrom(netip.IPv6Unspecified(), 0), Gateway: a.Gw6, Index: index})
	}
	for _, sib := range a.Siblings {
		if sib.Is6() && !ipv6 {
			continue // no IPv6 here at all
		}
		routes = append(routes, netlink.Route{Dst: netip.PrefixFrom(sib, sib.BitLen()), Unreachable: true})
	}
	if err := c.SetUp(index); err != nil {
		return err
	}
	for _, r := range routes {
		if err := c.AddRoute(r); err != nil {
			return err
		}
	}
	return nil
}

// ifindex returns the index of the interface name. It uses an ioctl rather than package net,
// which would make a cgo build of bay0 dynamically linked.
func ifindex(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("find uplink device %s: %w", name, err)
	}
	return int(ifr.Uint32()), nil
}
