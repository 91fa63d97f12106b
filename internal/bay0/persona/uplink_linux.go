package persona

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"alpinespine.org/spine/internal/bay0/netlink"
)

// sysClassNet lists the governor's network devices.
const sysClassNet = "/sys/class/net"

// ErrNoNIC refuses an uplink on a machine without a network card.
var ErrNoNIC = errors.New("no ethernet network card")

// attachUplink creates the persona's uplink: a macvlan device in private mode on the machine's
// network card, so that personas on the same card exchange nothing (unicast, broadcast or
// multicast), made directly in the network namespace of pid (persona-init, waiting for its
// config). The kernel checks the new name against the governor's namespace too, where the card
// itself may be eth0, so the device gets a name unique to pid; persona-init renames it
// UplinkName and gives it its addresses and routes.
func attachUplink(pid int, name string) (device string, err error) {
	nic, index, err := machineNIC(sysClassNet)
	if err != nil {
		return "", err
	}
	hw, err := os.ReadFile(filepath.Join(sysClassNet, nic, "address"))
	if err != nil {
		return "", fmt.Errorf("uplink on %s: %w", nic, err)
	}
	device = "up" + strconv.Itoa(pid)
	c, err := netlink.Dial()
	if err != nil {
		return "", err
	}
	defer c.Close()
	// macvlan devices carry no traffic while their parent is down; the governor gives the card
	// no address of its own.
	if err := c.SetUp(index); err != nil {
		return "", fmt.Errorf("uplink on %s: %w", nic, err)
	}
	mac := UplinkMAC([]byte(strings.TrimSpace(string(hw))), name)
	if err := c.AddMacvlan(netlink.Macvlan{Name: device, Parent: index, NetnsPID: pid, MAC: mac}); err != nil {
		return "", fmt.Errorf("uplink on %s: %w", nic, err)
	}
	return device, nil
}

// machineNIC returns the name and ifindex of the first (by name) ethernet device under dir
// that is backed by hardware: ARPHRD_ETHER and a device link, which leaves out lo and every
// virtual device.
func machineNIC(dir string) (string, int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", 0, fmt.Errorf("list network devices: %w", err)
	}
	for _, e := range ents {
		d := filepath.Join(dir, e.Name())
		typ, err := os.ReadFile(filepath.Join(d, "type"))
		if err != nil || strings.TrimSpace(string(typ)) != "1" {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "device")); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(d, "ifindex"))
		if err != nil {
			return "", 0, fmt.Errorf("network device %s: %w", e.Name(), err)
		}
		index, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || index <= 0 {
			return "", 0, fmt.Errorf("network device %s: bad ifindex %q", e.Name(), b)
		}
		return e.Name(), index, nil
	}
	return "", 0, ErrNoNIC
}
