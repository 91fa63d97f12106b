// Package persona launches one persona instance: a workload in its own PID, mount, network,
// IPC, UTS, cgroup and user namespaces, in a cgroup v2 leaf with the policy's limits, set up
// from the inside by persona-init (a re-executed bay0) and then exec'd.
//
// This file holds the pure parts: the Spec of a persona, the versioned Config handed to
// persona-init, and the values written to the cgroup. The kernel-facing parts are in the
// *_linux.go files; the child's side is package personainit.
package persona

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/format/policy"
)

// ConfigVersion is the version of Config. persona-init refuses any other: it is always the same
// binary as its parent, so a mismatch means something else is talking to it.
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
	// bay0; persona-init hands it to the workload as courier.ChannelFD.
	CourierFD = 7
)

// InitArg is the first argument that makes bay0 persona-init.
const InitArg = "persona-init"

// Each persona gets its own range of IDBlock uids and gids, starting at IDBase, so that even a
// process that escaped its namespaces is an unprivileged uid no other persona shares.
const (
	IDBase  = 100000
	IDBlock = 65536
)

// IDRange returns the first host uid/gid of the persona with the given index in the policy.
func IDRange(index int) uint32 { return IDBase + IDBlock*uint32(index) }

// Spec is everything needed to launch instances of one persona. It is computed once, when the
// governor starts, and does not change for the life of the boot.
type Spec struct {
	Name string
	// Tree is the persona's root tree as the governor sees it, e.g. /personas/web.
	Tree string
	Exec []string
	Env  []string
	// Workdir is the working directory inside the persona; "" is /.
	Workdir string
	// UID and GID are the first host ids of the persona's range (IDRange); inside, they are 0.
	UID, GID uint32
	// RunAs is the user the workload runs as, inside the persona (0:0 is its root).
	RunAs IDs
	// ShmSize bounds the persona's tmpfs /dev/shm.
	ShmSize int64
	// Rlimits are the workload's resource limits, soft = hard.
	Rlimits []Rlimit
	// DNS are the name servers of a generated /etc/resolv.conf.
	DNS     []string
	Limits  Limits
	TmpSize int64
	RunSize int64
	// DataDir is the host directory mounted at /data (e.g. /persist/web); "" for none.
	DataDir  string
	DataExec bool
	// DataSize is the hard limit of DataDir in bytes (a project quota on /persist).
	DataSize int64
	// Seccomp is the compiled filter, as seccomp.Program.MarshalBinary encodes it.
	Seccomp []byte
	// Self is the bay0 binary to re-execute, normally /proc/self/exe.
	Self string
	// CgroupParent is the cgroup v2 directory under which the persona's leaf is made.
	CgroupParent string
	// Uplink, if not nil, gives the persona a macvlan device on the machine's network card.
	Uplink *Uplink
	// StopSignal asks the workload to end; StopTimeout is how long it has before its cgroup
	// is killed.
	StopSignal  unix.Signal
	StopTimeout time.Duration
	// Courier, if set, is the persona's end of its channel to bay0 (the persona is the
	// machine's courier): every instance gets it.
	Courier *os.File
}

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

// UplinkMAC is the hardware address of a persona's uplink: locally administered, unicast,
// the same at every launch on this machine (so the network's ARP caches stay right across a
// replacement) and different for each persona and each machine (nic is the card's own
// address).
func UplinkMAC(nic []byte, name string) [6]byte {
	h := sha256.Sum256(append(append([]byte("alpinespine persona uplink\x00"), nic...), name...))
	var mac [6]byte
	copy(mac[:], h[:6])
	mac[0] = mac[0]&^1 | 2
	return mac
}

// Siblings returns the uplink addresses of every persona of pol but self.
func Siblings(pol policy.Policy, self string) []string {
	var out []string
	for _, q := range pol.Personas {
		if q.Name == self {
			continue
		}
		for _, a := range q.UplinkAddrs() {
			out = append(out, a.String())
		}
	}
	return out
}

// NewSpec turns a policy entry into a Spec. index is the persona's position in the policy;
// spineRoot is where the Spine is mounted ("/" in the governor); persistRoot is the mounted
// /persist or "" when there is none, in which case a persona that wants /data is refused.
func NewSpec(p policy.Persona, index int, spineRoot, persistRoot string, filter []byte) (Spec, error) {
	uid, gid, err := p.IDs()
	if err != nil {
		return Spec{}, fmt.Errorf("persona %q: %w", p.Name, err)
	}
	s := Spec{
		RunAs:        IDs{UID: uid, GID: gid},
		Name:         p.Name,
		Tree:         path.Join(spineRoot, p.Tree()),
		Exec:         p.Exec,
		Env:          p.Env,
		Workdir:      p.Workdir,
		UID:          IDRange(index),
		GID:          IDRange(index),
		Limits:       LimitsOf(p),
		TmpSize:      int64(p.TmpSize),
		RunSize:      int64(p.RunSize),
		DataExec:     p.DataExec,
		Seccomp:      filter,
		Self:         "/proc/self/exe",
		CgroupParent: "/sys/fs/cgroup/personas",
		StopSignal:   unix.Signal(p.Signal()),
		ShmSize:      int64(p.ShmSize),
		Rlimits:      RlimitsOf(p),
		DNS:          p.DNS,
		StopTimeout:  time.Duration(p.StopTimeout),
	}
	if p.Data {
		if persistRoot == "" {
			return Spec{}, fmt.Errorf("persona %q: %w", p.Name, ErrNoPersist)
		}
		s.DataDir = path.Join(persistRoot, p.Name)
		s.DataSize = int64(p.DataSize)
	}
	if p.Network == "uplink" {
		u := &Uplink{Address: p.Address, Gateway: p.Gateway, Address6: p.Address6, Gateway6: p.Gateway6}
		if _, err := u.Parse(); err != nil {
			return Spec{}, fmt.Errorf("persona %q: %w", p.Name, err)
		}
		s.Uplink = u
	}
	return s, nil
}

// IDs are a uid and a gid inside a persona's user namespace, below IDBlock.
type IDs struct {
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
}

// Host returns the host ids that ids map to in a persona whose range starts at base.
func (ids IDs) Host(base uint32) (uid, gid uint32) { return base + ids.UID, base + ids.GID }

// ErrNoPersist refuses a persona with data = true on a machine whose /persist is not mounted.
var ErrNoPersist = errors.New("data = true but /persist is not mounted")

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

// RlimitsOf returns a policy entry's rlimits in resource order.
func RlimitsOf(p policy.Persona) []Rlimit {
	var out []Rlimit
	for name, v := range p.Rlimits {
		if r, ok := policy.Rlimits[name]; ok {
			out = append(out, Rlimit{Resource: r, Value: v})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Resource < out[j].Resource })
	return out
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

// Config renders the Config of one launch of s.
func (s Spec) Config() Config {
	return Config{Version: ConfigVersion, Name: s.Name, Tree: s.Tree, Exec: s.Exec, Env: s.Env,
		Workdir: s.Workdir, TmpSize: s.TmpSize, RunSize: s.RunSize, Data: s.DataDir != "", Seccomp: s.Seccomp,
		Uplink: s.Uplink, User: s.user(), ShmSize: s.shmSize(), Rlimits: s.Rlimits, DNS: s.DNS,
		Courier: s.Courier != nil}
}

// shmSize is ShmSize, or for a Spec made by hand without one, the policy's default.
func (s Spec) shmSize() int64 {
	if s.ShmSize > 0 {
		return s.ShmSize
	}
	if s.Limits.MemoryMax > 0 {
		return min(int64(policy.DefaultShmSize), s.Limits.MemoryMax)
	}
	return int64(policy.DefaultShmSize)
}

func (s Spec) user() *IDs {
	if s.RunAs == (IDs{}) {
		return nil
	}
	u := s.RunAs
	return &u
}

// Encode writes c as one JSON document.
func (c Config) Encode(w io.Writer) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode persona config: %w", err)
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write persona config: %w", err)
	}
	return nil
}

// DecodeConfig reads exactly one Config from r (to EOF), strictly: unknown fields, trailing
// data, another version or a missing field are errors.
func DecodeConfig(r io.Reader) (Config, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxConfigSize+1))
	if err != nil {
		return Config{}, fmt.Errorf("read persona config: %w", err)
	}
	if len(b) > MaxConfigSize {
		return Config{}, fmt.Errorf("persona config is larger than %d bytes", MaxConfigSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("decode persona config: %w", err)
	}
	if dec.More() {
		return Config{}, errors.New("decode persona config: trailing data")
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

// Limits are the cgroup v2 limits of a persona.
type Limits struct {
	// CPUMax is cpu.max: "quota period" in microseconds.
	CPUMax string `json:"cpu_max"`
	// MemoryMax is memory.max in bytes. Swap is always 0.
	MemoryMax int64 `json:"memory_max"`
	// PidsMax is pids.max: processes and threads.
	PidsMax int `json:"pids_max"`
}

// LimitsOf returns the limits of a policy entry.
func LimitsOf(p policy.Persona) Limits {
	return Limits{CPUMax: p.CPUMax(), MemoryMax: int64(p.Memory), PidsMax: p.Pids}
}

// CgroupFile is one value written into a cgroup directory.
type CgroupFile struct {
	Name, Value string
}

// Files returns what is written into a persona's leaf when it is made, in order, before the
// clone: persona-init and the workload are held to them from their first instruction.
// memory.oom.group makes an out-of-memory kill take the whole persona, which is then
// replaced, never left half alive.
func (l Limits) Files() []CgroupFile {
	return []CgroupFile{
		{"memory.max", strconv.FormatInt(l.MemoryMax, 10)},
		{"memory.swap.max", "0"},
		{"memory.oom.group", "1"},
		{"pids.max", strconv.Itoa(l.PidsMax)},
	}
}

// ExecFiles returns what is written into the leaf once persona-init's setup is done and
// before it is released to exec the workload (see sync.go): the CPU quota. Under a quota of a
// tenth of a core, the setup (bay0's start, the mounts, the network) would take ten times its
// time; the workload is held to the quota from its first instruction all the same.
func (l Limits) ExecFiles() []CgroupFile {
	return []CgroupFile{{"cpu.max", l.CPUMax}}
}

// SubtreeControl is written to cgroup.subtree_control above persona leaves: it enables the
// controllers whose limits Files sets.
const SubtreeControl = "+cpu +memory +pids"

// ParseKeyed parses a flat-keyed cgroup file such as memory.events or cgroup.events
// ("key value" per line).
func ParseKeyed(r io.Reader) (map[string]int64, error) {
	b, err := io.ReadAll(io.LimitReader(r, 64<<10))
	if err != nil {
		return nil, err
	}
	m := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("cgroup file line %q: %w", line, err)
		}
		m[k] = n
	}
	return m, nil
}

// MemoryStat is what the governor samples of a persona's memory: PSI's total time (in
// microseconds) during which every runnable task of the cgroup was stalled on memory
// (memory.pressure "full"), how often the cgroup ran into memory.max (memory.events "max"), and
// how many evicted pages it has faulted back in (memory.stat workingset_refault_anon and
// _file): a persona that keeps reading back what its limit just made it drop is thrashing.
type MemoryStat struct {
	FullStallUS uint64
	MaxEvents   int64
	Refaults    int64
}

// ParsePressure returns the "full" total of a PSI file such as memory.pressure:
//
//	some avg10=0.00 avg60=0.00 avg300=0.00 total=1234
//	full avg10=0.00 avg60=0.00 avg300=0.00 total=567
func ParsePressure(r io.Reader) (uint64, error) {
	b, err := io.ReadAll(io.LimitReader(r, 4<<10))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "full" {
			continue
		}
		for _, kv := range f[1:] {
			if v, ok := strings.CutPrefix(kv, "total="); ok {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return 0, fmt.Errorf("pressure line %q: %w", line, err)
				}
				return n, nil
			}
		}
	}
	return 0, errors.New("pressure file has no full total")
}
