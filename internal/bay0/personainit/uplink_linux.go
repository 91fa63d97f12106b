package personainit

import (
	"fmt"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/netlink"
	"alpinespine.org/spine/internal/bay0/persona"
)

// uplinkUp configures the ipvlan device the governor put in this network namespace under the
// name u.Device: its name UplinkName, its address, the link up, then the default route, which
// the kernel refuses on a link that is down. persona-init is root of the user namespace that
// owns the network namespace, so it has CAP_NET_ADMIN here and nowhere else.
func uplinkUp(u *persona.Uplink) error {
	if u == nil {
		return nil
	}
	addr, gw, err := u.Parse()
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
	if err := c.Rename(index, persona.UplinkName); err != nil {
		return err
	}
	if err := c.AddAddr(index, addr); err != nil {
		return err
	}
	if err := c.SetUp(index); err != nil {
		return err
	}
	if gw.IsValid() {
		return c.AddDefaultRoute(index, gw)
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
