// Package launch is what the governor and persona-init say to each other when a persona
// starts: the Config persona-init reads on ConfigFD, the other fds it is handed, and the
// reports it writes back on SyncFD (the protocol is drawn in package persona's sync.go). It is
// small and pure so that persona-init, a binary of its own, links nothing else of bay0.
package launch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path"
	"strings"
)

// ConfigVersion is the version of Config. persona-init refuses any other: it is built from the
// same source as its parent and signed into the same Spine, so a mismatch means something else
// is talking to it.
const ConfigVersion = 1

// MaxConfigSize bounds the config persona-init reads.
const MaxConfigSize = 1 << 20

// The fds persona-init receives beside stdin, stdout and stderr.
const (
	ConfigFD  = 3 // the Config, one JSON document, then EOF
	SyncFD    = 4 // persona-init's reports to the parent (see sync.go)
	ReleaseFD = 5 // one byte from the parent once the workload's deferred limits are set
	DataFD    = 6 // present only when Config.Data: a detached mount of the persona's /data
	// CourierFD is present only when Config.Courier: the persona's end of its channel to
	// bay0; persona-init hands it to the workload as CourierChannelFD.
	CourierFD = 7
)

// CourierChannelFD is where the courier persona's workload finds its channel: courier.ChannelFD
// of package internal/format/courier, which persona-init does not link (TestCourierChannelFD
// keeps the two equal).
const CourierChannelFD = 3

// InitArg is persona-init's first argument, argv[1]: the mode a binary that is more than
// persona-init (spine, on a build host) dispatches on.
const InitArg = "persona-init"

// InitPath is persona-init's place in a Spine: the governor launches every persona through it.
// Like every file of the Spine, it is covered by the signed verity root hash.
const InitPath = "/bin/persona-init"

// IDBlock is the number of uids and gids of a persona's user namespace: inside, every id is
// below it.
const IDBlock = 65536

// UplinkName is the name of the persona's uplink device inside its network namespace.
const UplinkName = "eth0"

// Uplink is the persona's network: a macvlan device (private mode) named UplinkName with the
// policy's addresses and routes and nothing else: IPv6 only when the policy gives an address6,
// and a route that refuses every other persona's address.
type Uplink struct {
	// Address is an IPv4 address with its prefix length, "10.0.2.15/24".
	Address string `json:"address"`
	// Gateway is an IPv4 address inside Address's network, or "".
	Gateway string `json:"gateway,omitempty"`
	// Address6 is an IPv6 address with its prefix length, or "" for no IPv6 at all.
	Address6 string `json:"address6,omitempty"`
	// Gateway6 is the IPv6 default route's gateway, or "".
	Gateway6 string `json:"gateway6,omitempty"`
	// Siblings are the other personas' uplink addresses: unreachable from this one.
	Siblings []string `json:"siblings,omitempty"`
	// Device is the name the parent gave the device in the persona's namespace, set in the
	// Config of one launch only; persona-init renames it UplinkName.
	Device string `json:"device,omitempty"`
}

// UplinkAddrs is an Uplink, parsed. Invalid fields are absent.
type UplinkAddrs struct {
	Addr, Addr6 netip.Prefix
	Gw, Gw6     netip.Addr
	Siblings    []netip.Addr
}

// Parse checks and parses u.
func (u Uplink) Parse() (UplinkAddrs, error) {
	var a UplinkAddrs
	p, err := netip.ParsePrefix(u.Address)
	if err != nil || !p.Addr().Is4() {
		return a, fmt.Errorf("uplink address %q is not an IPv4 prefix", u.Address)
	}
	a.Addr = p
	if u.Gateway != "" {
		gw, err := netip.ParseAddr(u.Gateway)
		if err != nil || !gw.Is4() || !p.Contains(gw) {
			return a, fmt.Errorf("uplink gateway %q is not an IPv4 address in %s", u.Gateway, p.Masked())
		}
		a.Gw = gw
	}
	if u.Address6 != "" {
		p6, err := netip.ParsePrefix(u.Address6)
		if err != nil || !p6.Addr().Is6() || p6.Addr().Is4In6() || p6.Addr().Zone() != "" {
			return a, fmt.Errorf("uplink address6 %q is not an IPv6 prefix", u.Address6)
		}
		a.Addr6 = p6
	}
	if u.Gateway6 != "" {
		gw, err := netip.ParseAddr(u.Gateway6)
		if err != nil || !a.Addr6.IsValid() || !gw.Is6() || gw.Zone() != "" {
			return a, fmt.Errorf("uplink gateway6 %q is not an IPv6 address beside an address6", u.Gateway6)
		}
		a.Gw6 = gw
	}
	for _, s := range u.Siblings {
		sib, err := netip.ParseAddr(s)
		if err != nil || sib.Zone() != "" || sib == a.Addr.Addr() || sib == a.Addr6.Addr() {
			return a, fmt.Errorf("uplink sibling %q is not another persona's address", s)
		}
		a.Siblings = append(a.Siblings, sib)
	}
	return a, nil
}

// Sysctl is one setting of the persona's network namespace, by its path under /proc/sys.
type Sysctl struct{ Path, Value string }

// UplinkSysctls are written by persona-init in the persona's network namespace before the
// uplink comes up. Strict reverse-path filtering drops whatever arrives from an address the
// persona cannot route to (every sibling's, see Uplink.Siblings), even through an outside
// router; redirects are refused, so the routes stay the policy's; a gratuitous ARP at link up
// tells the network the persona's own MAC. Without an IPv6 address, IPv6 is off on the uplink;
// with one, there is no router advertisement, no autoconfiguration and no generated link-local
// address: only the policy's address.
func UplinkSysctls(ipv6 bool) []Sysctl {
	dev := func(family, key, v string) Sysctl {
		return Sysctl{"net/" + family + "/conf/" + UplinkName + "/" + key, v}
	}
	s := []Sysctl{
		{"net/ipv4/conf/all/rp_filter", "1"}, dev("ipv4", "rp_filter", "1"),
		{"net/ipv4/conf/all/accept_redirects", "0"}, dev("ipv4", "accept_redirects", "0"),
		dev("ipv4", "arp_notify", "1"),
	}
	if !ipv6 {
		return append(s, dev("ipv6", "disable_ipv6", "1"))
	}
	return append(s, dev("ipv6", "accept_ra", "0"), dev("ipv6", "autoconf", "0"),
		dev("ipv6", "accept_redirects", "0"), dev("ipv6", "addr_gen_mode", "1"))
}

// IDs are a uid and a gid inside a persona's user namespace, below IDBlock.
type IDs struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

// Host returns the host ids that ids map to in a persona whose range starts at base.
func (ids IDs) Host(base uint32) (uid, gid uint32) { return base + ids.UID, base + ids.GID }

// Config is what the parent tells persona-init, as one JSON document on ConfigFD.
type Config struct {
	Version int `json:"version"`
	// Name is the persona's name, also its hostname.
	Name string `json:"name"`
	// Tree is the persona's root tree in the parent's mount namespace.
	Tree    string   `json:"tree"`
	Exec    []string `json:"exec"`
	Env     []string `json:"env,omitempty"`
	Workdir string   `json:"workdir,omitempty"`
	TmpSize int64    `json:"tmp_size"`
	RunSize int64    `json:"run_size"`
	// Data says that DataFD carries a detached mount to attach at /data.
	Data bool `json:"data,omitempty"`
	// Seccomp is the filter program, 8 bytes per instruction.
	Seccomp []byte `json:"seccomp"`
	// Uplink says that the parent put a macvlan device named Uplink.Device in the persona's
	// network namespace, and how to configure it; nil for loopback only.
	Uplink *Uplink `json:"uplink,omitempty"`
	// User is who the workload runs as, when not the persona's root.
	User *IDs `json:"user,omitempty"`
	// ShmSize bounds /dev/shm; Rlimits are set just before the exec; DNS fills a generated
	// /etc/resolv.conf.
	ShmSize int64    `json:"shm_size"`
	Rlimits []Rlimit `json:"rlimits,omitempty"`
	DNS     []string `json:"dns,omitempty"`
	// Courier says that CourierFD carries the courier channel.
	Courier bool `json:"courier,omitempty"`
}

// Rlimit is one resource limit (setrlimit(2)), soft and hard alike.
type Rlimit struct {
	Resource int    `json:"resource"`
	Value    uint64 `json:"value"`
}

// HostsFile is the /etc/hosts of a persona whose tree has none: localhost, and the persona's
// name at its uplink addresses (at the loopback address without an uplink).
func HostsFile(name string, u *Uplink) string {
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	named := false
	if u != nil {
		for _, s := range []string{u.Address, u.Address6} {
			if p, err := netip.ParsePrefix(s); err == nil {
				fmt.Fprintf(&b, "%s\t%s\n", p.Addr(), name)
				named = true
			}
		}
	}
	if !named {
		fmt.Fprintf(&b, "127.0.1.1\t%s\n", name)
	}
	return b.String()
}

// ResolvConf is the /etc/resolv.conf of a persona whose tree has none ("" without servers).
func ResolvConf(dns []string) string {
	var b strings.Builder
	for _, s := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	return b.String()
}

// Encode writes c as one JSON document.
func (c Config) Encode(w io.Writer) error { return encodeJSON(w, c, "persona config") }

// DecodeConfig reads exactly one Config from r (to EOF), strictly: unknown fields, trailing
// data, another version or a missing field are errors.
func DecodeConfig(r io.Reader) (Config, error) {
	var c Config
	if err := decodeJSON(r, MaxConfigSize, &c, "persona config"); err != nil {
		return Config{}, err
	}
	if err := c.validate(); err != nil {
		return Config{}, fmt.Errorf("persona config: %w", err)
	}
	// An empty list and an absent one mean the same; keep one form, so a config decodes to
	// the value it was encoded from.
	if len(c.Env) == 0 {
		c.Env = nil
	}
	if len(c.Rlimits) == 0 {
		c.Rlimits = nil
	}
	if len(c.DNS) == 0 {
		c.DNS = nil
	}
	return c, nil
}

// encodeJSON writes v, the document what, as one JSON document.
func encodeJSON(w io.Writer, v any, what string) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", what, err)
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", what, err)
	}
	return nil
}

// decodeJSON reads exactly one JSON document of at most max bytes from r (to EOF) into v,
// strictly: unknown fields and trailing data are errors.
func decodeJSON(r io.Reader, max int, v any, what string) error {
	b, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	if len(b) > max {
		return fmt.Errorf("%s is larger than %d bytes", what, max)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", what, err)
	}
	if dec.More() {
		return fmt.Errorf("decode %s: trailing data", what)
	}
	return nil
}

func (c Config) validate() error {
	switch {
	case c.Version != ConfigVersion:
		return fmt.Errorf("version %d, want %d", c.Version, ConfigVersion)
	case c.Name == "" || strings.ContainsAny(c.Name, "/\x00") || len(c.Name) > 64:
		return fmt.Errorf("bad name %q", c.Name)
	case !path.IsAbs(c.Tree) || path.Clean(c.Tree) != c.Tree:
		return fmt.Errorf("tree %q is not a clean absolute path", c.Tree)
	case len(c.Exec) == 0 || !path.IsAbs(c.Exec[0]):
		return errors.New("exec must start with an absolute path")
	case c.Workdir != "" && !path.IsAbs(c.Workdir):
		return fmt.Errorf("workdir %q is not absolute", c.Workdir)
	case c.TmpSize <= 0 || c.RunSize <= 0 || c.ShmSize <= 0:
		return errors.New("tmp, run and shm sizes must be positive")
	case len(c.Seccomp) == 0:
		return errors.New("no seccomp program")
	case c.User != nil && (c.User.UID >= IDBlock || c.User.GID >= IDBlock):
		return fmt.Errorf("user %d:%d is outside the persona's %d ids", c.User.UID, c.User.GID, IDBlock)
	}
	if c.Uplink != nil {
		if _, err := c.Uplink.Parse(); err != nil {
			return err
		}
		if d := c.Uplink.Device; d == "" || len(d) > 15 || strings.ContainsAny(d, "/: \x00") {
			return fmt.Errorf("bad uplink device name %q", d)
		}
	}
	for _, r := range c.Rlimits {
		if r.Resource < 0 || r.Resource >= 16 {
			return fmt.Errorf("rlimit resource %d is not one of Linux's", r.Resource)
		}
	}
	for _, s := range c.DNS {
		if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" {
			return fmt.Errorf("dns server %q is not an IP address", s)
		}
	}
	for _, s := range append(append([]string{}, c.Exec...), c.Env...) {
		if strings.IndexByte(s, 0) >= 0 {
			return errors.New("NUL byte in exec or env")
		}
	}
	return nil
}

// Report is one message from persona-init on the sync pipe.
type Report struct {
	Stage string `json:"stage"`
	Error string `json:"error,omitempty"`
}

// StageExec is the report sent just before execve of the workload.
const StageExec = "exec"

// StageReady is the report sent when the setup is done; persona-init then waits for its
// release on ReleaseFD.
const StageReady = "ready"

// WriteReport sends one report.
func WriteReport(w io.Writer, rep Report) error {
	b, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
