// Package policy defines the persona policy that is baked into a Spine at build time and read
// by the governor at boot: what each persona runs and the kernel limits that bound it.
//
// The operator writes the policy in TOML (the build configuration's persona tables, decoded
// strictly on the build host: a misspelt limit that is silently ignored is a limit that does not
// exist). The build bakes it into the signed Spine as canonical JSON, which is what PID 1 reads:
// bay0 links no TOML parser. Every field carries the same name in both encodings.
package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"alpinespine.org/spine/internal/format/syscalls"
)

// Path is where the policy lives inside a Spine.
const Path = "etc/spine/policy.json"

// TreeRoot is the directory of the Spine that holds one read-only root tree per persona.
const TreeRoot = "personas"

// MaxSize bounds the policy file; it is read by PID 1.
const MaxSize = 1 << 20

// Policy is everything bay0 is told at build time. It cannot change at run time.
type Policy struct {
	Governor Governor  `toml:"governor" json:"governor"`
	Personas []Persona `toml:"persona" json:"persona"`
}

// Governor holds the settings of bay0 itself.
type Governor struct {
	// PassphraseAttempts is how many wrong LUKS passphrases are tolerated before power off.
	PassphraseAttempts int `toml:"passphrase_attempts,omitempty" json:"passphrase_attempts,omitempty"`
	// WatchdogTimeout is the hardware watchdog's timeout.
	WatchdogTimeout Duration `toml:"watchdog_timeout,omitempty" json:"watchdog_timeout,omitempty"`
	// HealthWindow is how long a trial Spine must stay healthy before it is committed.
	HealthWindow Duration `toml:"health_window,omitempty" json:"health_window,omitempty"`
	// TrialDeadline is how long a trial Spine has to become healthy: past it, bay0 reboots
	// and the boot law reverts the trial. At least twice the health window.
	TrialDeadline Duration `toml:"trial_deadline,omitempty" json:"trial_deadline,omitempty"`
	// ResetLimit is how many boots of a committed Spine in a row may end without a clean end
	// (a watchdog reset, a panic, a power cut) before it is marked bad and the other slot
	// boots.
	ResetLimit int `toml:"reset_limit,omitempty" json:"reset_limit,omitempty"`
}

// Persona is one disposable workload and its bounds.
type Persona struct {
	Name    string   `toml:"name" json:"name"`
	Exec    []string `toml:"exec" json:"exec"`
	Env     []string `toml:"env,omitempty" json:"env,omitempty"`
	Workdir string   `toml:"workdir,omitempty" json:"workdir,omitempty"`
	// CPUs is the share of CPU time, in cores (0.5 = half of one core): cpu.max.
	CPUs float64 `toml:"cpus" json:"cpus"`
	// Memory is memory.max; swap is always 0.
	Memory Size `toml:"memory" json:"memory"`
	// Pids is pids.max.
	Pids int `toml:"pids" json:"pids"`
	// TmpSize and RunSize bound the persona's tmpfs /tmp and /run.
	TmpSize Size `toml:"tmp_size,omitempty" json:"tmp_size,omitempty"`
	RunSize Size `toml:"run_size,omitempty" json:"run_size,omitempty"`
	// Data grants /persist/<name> at /data; DataExec allows executing from it.
	Data     bool `toml:"data,omitempty" json:"data,omitempty"`
	DataExec bool `toml:"data_exec,omitempty" json:"data_exec,omitempty"`
	// DataSize is the hard limit of /data, enforced by the kernel (an ext4 project quota);
	// DefaultDataSize when data = true and the policy is silent.
	DataSize Size `toml:"data_size,omitempty" json:"data_size,omitempty"`
	// Network is "none" (loopback only) or "uplink": a macvlan device, eth0, on the machine's
	// network card, isolated from every other persona's.
	Network string `toml:"network,omitempty" json:"network,omitempty"`
	// Address is the uplink's IPv4 address with its prefix length, e.g. "10.0.2.15/24";
	// mandatory with network = "uplink", refused otherwise.
	Address string `toml:"address,omitempty" json:"address,omitempty"`
	// Gateway, if set, is the uplink's default route, e.g. "10.0.2.2"; it must be inside
	// Address's network.
	Gateway string `toml:"gateway,omitempty" json:"gateway,omitempty"`
	// Address6, if set, turns IPv6 on for the uplink with this address and prefix length,
	// e.g. "fd00::15/64"; without it the uplink has no IPv6 at all.
	Address6 string `toml:"address6,omitempty" json:"address6,omitempty"`
	// Gateway6, if set, is the uplink's IPv6 default route: inside Address6's network or
	// link-local. It needs Address6.
	Gateway6 string `toml:"gateway6,omitempty" json:"gateway6,omitempty"`
	// Restart is "always" (default) or "never".
	Restart string `toml:"restart,omitempty" json:"restart,omitempty"`
	// Optional, if true, lets a trial Spine commit without this persona running; by default
	// every persona is required.
	Optional bool `toml:"optional,omitempty" json:"optional,omitempty"`
	// Order is the start order; lower starts first, ties by name.
	Order int `toml:"order,omitempty" json:"order,omitempty"`
	// Syscalls extends the default seccomp allowlist for this persona only. spine build refuses
	// unknown names and the calls below the floor (package syscalls).
	Syscalls []string `toml:"syscalls,omitempty" json:"syscalls,omitempty"`
	// Protocols allows socket protocols beyond TCP and UDP: "mptcp", "sctp", "udplite", "icmp".
	Protocols []string `toml:"protocols,omitempty" json:"protocols,omitempty"`
	// MemoryStall is how long the persona may stay stuck on memory at its memory.max before it
	// is replaced (default DefaultMemoryStall).
	MemoryStall Duration `toml:"memory_stall,omitempty" json:"memory_stall,omitempty"`
	// StopSignal is the signal that asks the workload to end when it is stopped, replaced or
	// the machine goes down (default "SIGTERM", or the OCI image's StopSignal); StopTimeout is
	// how long it has to end before its whole cgroup is killed (default DefaultStopTimeout).
	StopSignal  string   `toml:"stop_signal,omitempty" json:"stop_signal,omitempty"`
	StopTimeout Duration `toml:"stop_timeout,omitempty" json:"stop_timeout,omitempty"`
	// User is who the workload runs as inside its persona: "NAME", "UID", "NAME:GROUP" or
	// "UID:GID" as the operator writes it (default: the OCI image's User, else root). spine
	// build resolves names in the persona's own /etc/passwd and /etc/group and bakes
	// "UID:GID"; bay0 takes only numbers. Whoever it is, the workload has no capabilities and
	// its ids are mapped to the persona's private host range.
	User string `toml:"user,omitempty" json:"user,omitempty"`
	// ShmSize bounds the persona's tmpfs /dev/shm (POSIX shared memory), counted against its
	// memory like every tmpfs it writes; default the smaller of DefaultShmSize and memory.
	ShmSize Size `toml:"shm_size,omitempty" json:"shm_size,omitempty"`
	// Rlimits are the workload's resource limits (setrlimit(2)), soft and hard, by name without
	// RLIMIT_: "nofile" (default DefaultNofile), "core", "stack"... (see Rlimits).
	Rlimits map[string]uint64 `toml:"rlimits,omitempty" json:"rlimits,omitempty"`
	// DNS lists the name servers written to the persona's /etc/resolv.conf when its tree has
	// none (at most 3, as glibc reads); it needs an uplink.
	DNS []string `toml:"dns,omitempty" json:"dns,omitempty"`
	// Courier makes this persona the machine's courier: bay0 gives it a channel on which, when
	// the operator asks for `update oci://...` on the control line, it receives one socket per
	// transfer to hand over the Spine it fetched (internal/format/courier). It needs an uplink;
	// it grants nothing else, and at most one persona is the courier.
	Courier bool `toml:"courier,omitempty" json:"courier,omitempty"`
	// LogPersist keeps the persona's output in /persist across reboots: bay0 writes it, on
	// the persona's behalf, to /persist/.logs/<name>, which no persona mounts, at most LogSize
	// bytes (default DefaultLogSize) in two files rotated in turn. Without it the persona's
	// lines live in RAM only and die with the boot (Article IV §3).
	LogPersist bool `toml:"log_persist,omitempty" json:"log_persist,omitempty"`
	LogSize    Size `toml:"log_size,omitempty" json:"log_size,omitempty"`
	// Health, if set, is the check that tells a healthy persona from one that merely runs.
	Health *Health `toml:"health,omitempty" json:"health,omitempty"`
}

// Health is a persona's health check, exactly one of three kinds: made by bay0 from its own
// side, a TCP connection to TCP, or an HTTP GET of HTTP on HTTPPort answered 2xx or 3xx, in the
// persona's network (its uplink address, or its loopback without one); or Exec, a program of the
// persona's tree run inside the persona as its user, under its filter and in its cgroup, that
// passes by exiting 0 within Timeout (Docker's HEALTHCHECK CMD). Until a check passes the persona is running,
// not healthy, and a trial Spine does not commit; Retries failed checks in a row, once
// StartPeriod has passed since the start, and the persona is replaced.
type Health struct {
	TCP         int      `toml:"tcp,omitempty" json:"tcp,omitempty"`
	HTTP        string   `toml:"http,omitempty" json:"http,omitempty"`
	HTTPPort    int      `toml:"http_port,omitempty" json:"http_port,omitempty"`
	Exec        []string `toml:"exec,omitempty" json:"exec,omitempty"`
	Interval    Duration `toml:"interval,omitempty" json:"interval,omitempty"`
	Timeout     Duration `toml:"timeout,omitempty" json:"timeout,omitempty"`
	Retries     int      `toml:"retries,omitempty" json:"retries,omitempty"`
	StartPeriod Duration `toml:"start_period,omitempty" json:"start_period,omitempty"`
}

// Defaults of a health check.
const (
	DefaultHealthInterval    = 2 * time.Second
	DefaultHealthTimeout     = time.Second
	DefaultHealthRetries     = 3
	DefaultHealthStartPeriod = time.Minute
)

// httpPathRE is what an HTTP health path may be: absolute, printable, no spaces (it is sent
// as is in the request line). Compiled on first use: bay0 and persona-init link this package,
// and the bounded repeat costs milliseconds to compile at every start.
var httpPathRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^/[!-~]{0,255}$`) })

// MaxHealthExecArgs and MaxHealthExecBytes bound an exec health check's argv.
const (
	MaxHealthExecArgs  = 64
	MaxHealthExecBytes = 4096
)

func (h *Health) validate() error {
	kinds := 0
	for _, set := range []bool{h.TCP != 0, h.HTTP != "", h.Exec != nil} {
		if set {
			kinds++
		}
	}
	switch {
	case kinds > 1:
		return errors.New("health: tcp, http and exec exclude each other")
	case kinds == 0:
		return errors.New("health: needs tcp = PORT, http = \"/PATH\" with http_port, or exec = [\"/PROGRAM\", ...]")
	case h.HTTPPort != 0 && h.HTTP == "":
		return errors.New("health: http_port needs http")
	case h.Exec != nil:
		if err := validHealthExec(h.Exec); err != nil {
			return err
		}
	case h.TCP != 0 && (h.TCP < 1 || h.TCP > 65535):
		return fmt.Errorf("health: tcp port %d is outside 1..65535", h.TCP)
	case h.HTTP != "" && !httpPathRE().MatchString(h.HTTP):
		return fmt.Errorf("health: http %q is not an absolute path without spaces", h.HTTP)
	case h.HTTP != "" && (h.HTTPPort < 1 || h.HTTPPort > 65535):
		return fmt.Errorf("health: http_port %d is outside 1..65535", h.HTTPPort)
	}
	if h.Interval == 0 {
		h.Interval = Duration(DefaultHealthInterval)
	}
	if h.Timeout == 0 {
		h.Timeout = Duration(min(DefaultHealthTimeout, time.Duration(h.Interval)))
	}
	if h.Retries == 0 {
		h.Retries = DefaultHealthRetries
	}
	if h.StartPeriod == 0 {
		h.StartPeriod = Duration(DefaultHealthStartPeriod)
	}
	switch t := time.Duration(h.Interval); {
	case t < 100*time.Millisecond || t > time.Hour:
		return fmt.Errorf("health: interval %s is outside 100ms..1h", t)
	case time.Duration(h.Timeout) < 10*time.Millisecond || h.Timeout > h.Interval:
		return fmt.Errorf("health: timeout %s is outside 10ms..interval (%s)", time.Duration(h.Timeout), t)
	case h.Retries < 1 || h.Retries > 100:
		return fmt.Errorf("health: retries %d is outside 1..100", h.Retries)
	case h.StartPeriod < 0 || time.Duration(h.StartPeriod) > time.Hour:
		return fmt.Errorf("health: start_period %s is outside 0..1h", time.Duration(h.StartPeriod))
	}
	return nil
}

// validHealthExec checks an exec health check's argv: a program named by an absolute path,
// bounded, with no NUL byte (it becomes execve's argv).
func validHealthExec(argv []string) error {
	if len(argv) == 0 || !strings.HasPrefix(argv[0], "/") {
		return errors.New("health: exec must name an absolute path inside the persona's tree")
	}
	if len(argv) > MaxHealthExecArgs {
		return fmt.Errorf("health: exec has %d arguments, at most %d", len(argv), MaxHealthExecArgs)
	}
	n := 0
	for _, a := range argv {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("health: exec argument %q holds a NUL byte", a)
		}
		n += len(a) + 1
	}
	if n > MaxHealthExecBytes {
		return fmt.Errorf("health: exec is %d bytes, at most %d", n, MaxHealthExecBytes)
	}
	return nil
}

// Port is the TCP port the check connects to (0 for an exec check).
func (h Health) Port() int { return max(h.TCP, h.HTTPPort) }

// Defaults filled in by Validate where the policy is silent.
const (
	DefaultPassphraseAttempts = 3
	DefaultWatchdogTimeout    = 10 * time.Second
	DefaultHealthWindow       = 20 * time.Second
	DefaultTrialDeadline      = 5 * time.Minute
	DefaultResetLimit         = 3
	// MinWatchdogTimeout is the shortest watchdog timeout bay0 can honour: its feeding
	// period is a quarter of the timeout, and its supervised loops never block longer than
	// their windows (2 s and up), so a shorter timeout would reset a healthy machine.
	MinWatchdogTimeout = 2 * time.Second
	DefaultTmpSize     = Size(16 << 20)
	DefaultRunSize     = Size(1 << 20)
	DefaultMemoryStall = 10 * time.Second
	DefaultStopTimeout = 10 * time.Second
	DefaultShmSize     = Size(64 << 20)
	// DefaultNofile is the open files limit, soft and hard, of a workload whose policy sets
	// none: enough for Redis's 10000 clients, PostgreSQL and nginx without a warning.
	DefaultNofile = 65536
	// MaxNofile is the kernel's default fs.nr_open, the most a process may have open.
	MaxNofile = 1 << 20
	// MaxDNS is how many name servers glibc's resolver reads (MAXNS).
	MaxDNS = 3
	// MaxStopTimeout bounds stop_timeout: the machine's shutdown waits for the slowest persona,
	// and the watchdog is fed through it for a bounded time only.
	MaxStopTimeout  = 2 * time.Minute
	DefaultDataSize = Size(8 << 20)
	// MinDataSize is the smallest data_size: room for a few files and directories.
	MinDataSize = Size(64 << 10)
	// DefaultLogSize and MaxLogSize bound a persona's log kept in /persist (log_persist).
	DefaultLogSize = Size(1 << 20)
	MinLogSize     = Size(64 << 10)
	MaxLogSize     = Size(64 << 20)
)

// Protocols are the names Persona.Protocols may hold.
var Protocols = []string{"icmp", "mptcp", "sctp", "udplite"}

// MinCPUs is the smallest CPU share: cpu.max refuses a quota below 1 ms per 100 ms period.
const MinCPUs = 0.01

// nameRE is compiled on first use: not at every start of bay0 (see manifest's patterns).
var nameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`) })

// Parse decodes and validates a baked policy: one JSON object, unknown fields refused.
func Parse(r io.Reader) (Policy, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return Policy{}, fmt.Errorf("read policy: %w", err)
	}
	if len(data) > MaxSize {
		return Policy{}, fmt.Errorf("policy is larger than %d bytes", MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return Policy{}, fmt.Errorf("policy: %w", err)
	}
	if dec.More() {
		return Policy{}, errors.New("policy: data after the JSON object")
	}
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// Validate checks the policy and fills in defaults. Limits are mandatory: a persona that is not
// bounded by the kernel is refused (Article III §3).
func (p *Policy) Validate() error {
	g := &p.Governor
	if g.PassphraseAttempts == 0 {
		g.PassphraseAttempts = DefaultPassphraseAttempts
	}
	if g.PassphraseAttempts < 1 || g.PassphraseAttempts > 10 {
		return fmt.Errorf("governor: passphrase_attempts %d is outside 1..10", g.PassphraseAttempts)
	}
	if g.WatchdogTimeout == 0 {
		g.WatchdogTimeout = Duration(DefaultWatchdogTimeout)
	}
	if t := time.Duration(g.WatchdogTimeout); t < MinWatchdogTimeout || t > 10*time.Minute || t%time.Second != 0 {
		return fmt.Errorf("governor: watchdog_timeout %s is outside %s..10m or not whole seconds (the hardware counts seconds)", t, MinWatchdogTimeout)
	}
	if g.HealthWindow == 0 {
		g.HealthWindow = Duration(DefaultHealthWindow)
	}
	if t := time.Duration(g.HealthWindow); t < time.Second || t > time.Hour {
		return fmt.Errorf("governor: health_window %s is outside 1s..1h", t)
	}
	if g.TrialDeadline == 0 {
		g.TrialDeadline = Duration(max(DefaultTrialDeadline, 2*time.Duration(g.HealthWindow)))
	}
	if t := time.Duration(g.TrialDeadline); t < 2*time.Duration(g.HealthWindow) || t > 24*time.Hour {
		return fmt.Errorf("governor: trial_deadline %s is outside twice the health window (%s)..24h", t, 2*time.Duration(g.HealthWindow))
	}
	if g.ResetLimit == 0 {
		g.ResetLimit = DefaultResetLimit
	}
	if g.ResetLimit < 1 || g.ResetLimit > 100 {
		return fmt.Errorf("governor: reset_limit %d is outside 1..100", g.ResetLimit)
	}
	seen := map[string]bool{}
	addrs := map[netip.Addr]string{}
	courier := ""
	for i := range p.Personas {
		q := &p.Personas[i]
		if err := q.validate(); err != nil {
			return fmt.Errorf("persona %d (%q): %w", i+1, q.Name, err)
		}
		if seen[q.Name] {
			return fmt.Errorf("persona %q is defined twice", q.Name)
		}
		seen[q.Name] = true
		if q.Courier {
			if courier != "" {
				return fmt.Errorf("personas %q and %q are both the courier; a machine has at most one", courier, q.Name)
			}
			courier = q.Name
		}
		for _, a := range q.UplinkAddrs() {
			if other, ok := addrs[a]; ok {
				return fmt.Errorf("personas %q and %q both have the uplink address %s", other, q.Name, a)
			}
			addrs[a] = q.Name
		}
	}
	sort.SliceStable(p.Personas, func(i, j int) bool {
		a, b := p.Personas[i], p.Personas[j]
		if a.Order != b.Order {
			return a.Order < b.Order
		}
		return a.Name < b.Name
	})
	return nil
}

func (q *Persona) validate() error {
	if !nameRE().MatchString(q.Name) {
		return fmt.Errorf("name must match %s", nameRE())
	}
	if len(q.Exec) == 0 || !strings.HasPrefix(q.Exec[0], "/") {
		return errors.New("exec must name an absolute path inside the persona's tree")
	}
	for _, e := range q.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("env entry %q is not KEY=VALUE", e)
		}
	}
	// The kernel refuses a cpu.max quota under 1 ms of a 100 ms period, and a NaN fails
	// every comparison, so the range is written to reject it too.
	if !(q.CPUs >= MinCPUs && q.CPUs <= 64) {
		return fmt.Errorf("cpus is mandatory and must be in [%g, 64]", MinCPUs)
	}
	if q.Memory < 4<<20 {
		return errors.New("memory is mandatory and must be at least 4MiB")
	}
	if q.Pids < 1 || q.Pids > 4096 {
		return errors.New("pids is mandatory and must be in 1..4096")
	}
	if q.TmpSize == 0 {
		q.TmpSize = DefaultTmpSize
	}
	if q.RunSize == 0 {
		q.RunSize = DefaultRunSize
	}
	if q.DataExec && !q.Data {
		return errors.New("data_exec needs data = true")
	}
	switch {
	case q.DataSize != 0 && !q.Data:
		return errors.New("data_size needs data = true")
	case q.Data && q.DataSize == 0:
		q.DataSize = DefaultDataSize
	case q.Data && q.DataSize < MinDataSize:
		return fmt.Errorf("data_size %d is below %d bytes", q.DataSize, MinDataSize)
	}
	switch q.Network {
	case "":
		q.Network = "none"
	case "none", "uplink":
	default:
		return fmt.Errorf("network %q is not none or uplink", q.Network)
	}
	if err := q.validateUplink(); err != nil {
		return err
	}
	if q.Courier && q.Network != "uplink" {
		return errors.New(`courier needs network = "uplink": a courier fetches Spines over its own network`)
	}
	switch q.Restart {
	case "":
		q.Restart = "always"
	case "always", "never":
	default:
		return fmt.Errorf("restart %q is not always or never", q.Restart)
	}
	for _, pr := range q.Protocols {
		if !slices.Contains(Protocols, pr) {
			return fmt.Errorf("protocols: %q is not one of %s", pr, strings.Join(Protocols, ", "))
		}
	}
	if q.MemoryStall == 0 {
		q.MemoryStall = Duration(DefaultMemoryStall)
	}
	if t := time.Duration(q.MemoryStall); t < time.Second || t > time.Hour {
		return fmt.Errorf("memory_stall %s is outside 1s..1h", t)
	}
	if err := q.validateStop(); err != nil {
		return err
	}
	if err := q.ValidateUser(); err != nil {
		return err
	}
	if q.ShmSize == 0 {
		q.ShmSize = min(DefaultShmSize, q.Memory)
	}
	if q.ShmSize < 64<<10 || q.ShmSize > q.Memory {
		return fmt.Errorf("shm_size %d is outside 64KiB..memory (%d bytes): /dev/shm is counted against memory", q.ShmSize, q.Memory)
	}
	if err := q.validateRlimits(); err != nil {
		return err
	}
	if err := q.validateLogs(); err != nil {
		return err
	}
	if q.Health != nil {
		if err := q.Health.validate(); err != nil {
			return err
		}
	}
	return q.validateDNS()
}

func (q *Persona) validateLogs() error {
	switch {
	case q.LogSize != 0 && !q.LogPersist:
		return errors.New("log_size needs log_persist = true: without it the logs are in RAM only")
	case q.LogPersist && q.LogSize == 0:
		q.LogSize = DefaultLogSize
	case q.LogPersist && (q.LogSize < MinLogSize || q.LogSize > MaxLogSize):
		return fmt.Errorf("log_size %d is outside %d..%d bytes", q.LogSize, MinLogSize, MaxLogSize)
	}
	return nil
}

// Rlimits are the resource limits a policy may set, by their setrlimit(2) names without
// RLIMIT_, with their x86-64 numbers. RLIMIT_NICE and RLIMIT_RTPRIO are left out: raised, they
// would let a persona take CPU time from the governor and its neighbours, past its cpu.max.
var Rlimits = map[string]int{
	"as": 9, "core": 4, "cpu": 0, "data": 2, "fsize": 1, "locks": 10, "memlock": 8, "msgqueue": 12,
	"nofile": 7, "nproc": 6, "sigpending": 11, "stack": 3,
}

func (q *Persona) validateRlimits() error {
	if q.Rlimits == nil {
		q.Rlimits = map[string]uint64{}
	}
	if _, ok := q.Rlimits["nofile"]; !ok {
		q.Rlimits["nofile"] = DefaultNofile
	}
	for name, v := range q.Rlimits {
		if _, ok := Rlimits[name]; !ok {
			names := make([]string, 0, len(Rlimits))
			for n := range Rlimits {
				names = append(names, n)
			}
			sort.Strings(names)
			return fmt.Errorf("rlimits: %q is not one of %s", name, strings.Join(names, ", "))
		}
		if name == "nofile" && (v < 64 || v > MaxNofile) {
			return fmt.Errorf("rlimits: nofile %d is outside 64..%d (fs.nr_open)", v, MaxNofile)
		}
	}
	return nil
}

func (q *Persona) validateDNS() error {
	if len(q.DNS) == 0 {
		return nil
	}
	if q.Network != "uplink" {
		return errors.New(`dns needs network = "uplink": without it the persona reaches no name server`)
	}
	if len(q.DNS) > MaxDNS {
		return fmt.Errorf("dns lists %d servers; the resolver reads only the first %d", len(q.DNS), MaxDNS)
	}
	for _, s := range q.DNS {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			return fmt.Errorf("dns server %q is not an IP address", s)
		}
	}
	return nil
}

// ValidateUser checks the form of User (names are resolved by spine build, not here).
func (q Persona) ValidateUser() error {
	if q.User != "" && !userRE().MatchString(q.User) {
		return fmt.Errorf("user %q is not NAME, UID, NAME:GROUP or UID:GID", q.User)
	}
	if _, _, err := q.IDs(); err != nil && !errors.Is(err, ErrUserName) {
		return err
	}
	return nil
}

// MaxID is the largest uid or gid inside a persona: its user namespace maps 65536 ids.
const MaxID = 65535

// userRE is what a user setting may look like: a name or a number, and optionally a group
// name or number.
var userRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^([a-z_][a-z0-9_.-]{0,31}\$?|[0-9]{1,10})(:([a-z_][a-z0-9_.-]{0,31}|[0-9]{1,10}))?$`)
})

// ErrUserName says that a user setting holds a name, which only spine build can resolve.
var ErrUserName = errors.New("user is a name: spine build resolves names to ids in the persona's /etc/passwd")

// IDs returns the uid and gid the workload runs as inside its persona (0, 0 when User is
// empty). A user with no group has the gid of its uid. A name gives ErrUserName.
func (q Persona) IDs() (uid, gid uint32, err error) {
	if q.User == "" {
		return 0, 0, nil
	}
	u, g, hasGroup := strings.Cut(q.User, ":")
	if !hasGroup {
		g = u
	}
	ids := [2]uint32{}
	for i, s := range []string{u, g} {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			if s != "" && (s[0] < '0' || s[0] > '9') {
				return 0, 0, fmt.Errorf("%w: %q", ErrUserName, q.User)
			}
			return 0, 0, fmt.Errorf("user %q: %w", q.User, err)
		}
		if n > MaxID {
			return 0, 0, fmt.Errorf("user %q: id %d is above %d, the last id of a persona's namespace", q.User, n, MaxID)
		}
		ids[i] = uint32(n)
	}
	return ids[0], ids[1], nil
}

func (q *Persona) validateStop() error {
	if q.StopSignal == "" {
		q.StopSignal = "SIGTERM"
	}
	sig, err := ParseSignal(q.StopSignal)
	if err != nil {
		return fmt.Errorf("stop_signal: %w", err)
	}
	q.StopSignal = SignalName(sig)
	if q.StopTimeout == 0 {
		q.StopTimeout = Duration(DefaultStopTimeout)
	}
	if t := time.Duration(q.StopTimeout); t < 100*time.Millisecond || t > MaxStopTimeout {
		return fmt.Errorf("stop_timeout %s is outside 100ms..%s", t, MaxStopTimeout)
	}
	return nil
}

// Vet makes the checks spine build, verify and audit make on top of Validate: every
// `syscalls` entry is a system call x86-64 has (the error names the nearest known ones) and is
// above the floor (the error names the call and what it would let the persona do). bay0 does not
// vet: a persona whose filter it cannot build is refused alone, never the machine.
func (p Policy) Vet() error {
	var errs []error
	for _, q := range p.Personas {
		for _, name := range q.Syscalls {
			if err := syscalls.Check(name); err != nil {
				errs = append(errs, fmt.Errorf("persona %q: syscalls: %w", q.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (q *Persona) validateUplink() error {
	if q.Network != "uplink" {
		if q.Address != "" || q.Gateway != "" || q.Address6 != "" || q.Gateway6 != "" {
			return errors.New(`address and gateway need network = "uplink"`)
		}
		return nil
	}
	if err := q.validateUplink6(); err != nil {
		return err
	}
	if q.Address == "" {
		return errors.New(`network = "uplink" needs an address such as "10.0.2.15/24"`)
	}
	p, err := netip.ParsePrefix(q.Address)
	if err != nil || !p.Addr().Is4() || p.Bits() < 1 {
		return fmt.Errorf("address %q is not an IPv4 address with a prefix length, like 10.0.2.15/24", q.Address)
	}
	if a := p.Addr(); a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == p.Masked().Addr() && p.Bits() < 31 {
		return fmt.Errorf("address %q cannot be a host's address", q.Address)
	}
	if q.Gateway == "" {
		return nil
	}
	gw, err := netip.ParseAddr(q.Gateway)
	if err != nil || !gw.Is4() {
		return fmt.Errorf("gateway %q is not an IPv4 address", q.Gateway)
	}
	if !p.Contains(gw) || gw == p.Addr() {
		return fmt.Errorf("gateway %s is not another host of %s", gw, p.Masked())
	}
	return nil
}

func (q *Persona) validateUplink6() error {
	if q.Address6 == "" {
		if q.Gateway6 != "" {
			return errors.New("gateway6 needs address6")
		}
		return nil
	}
	p, err := netip.ParsePrefix(q.Address6)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Addr().Zone() != "" || p.Bits() < 1 {
		return fmt.Errorf("address6 %q is not an IPv6 address with a prefix length, like fd00::15/64", q.Address6)
	}
	if a := p.Addr(); a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() {
		return fmt.Errorf("address6 %q cannot be a host's address", q.Address6)
	}
	if q.Gateway6 == "" {
		return nil
	}
	gw, err := netip.ParseAddr(q.Gateway6)
	if err != nil || !gw.Is6() || gw.Is4In6() || gw.Zone() != "" {
		return fmt.Errorf("gateway6 %q is not an IPv6 address", q.Gateway6)
	}
	if gw == p.Addr() || !p.Contains(gw) && !gw.IsLinkLocalUnicast() {
		return fmt.Errorf("gateway6 %s is neither another host of %s nor link-local", gw, p.Masked())
	}
	return nil
}

// UplinkAddrs returns the persona's uplink addresses, IPv4 then IPv6 (none without an uplink).
// Precondition: Validate accepted the policy.
func (q Persona) UplinkAddrs() []netip.Addr {
	var out []netip.Addr
	for _, s := range []string{q.Address, q.Address6} {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out
}

// Uplink returns the persona's uplink address and gateway (invalid if none). Precondition:
// Validate accepted the policy.
func (q Persona) Uplink() (netip.Prefix, netip.Addr) {
	if q.Network != "uplink" {
		return netip.Prefix{}, netip.Addr{}
	}
	p, _ := netip.ParsePrefix(q.Address)
	gw, _ := netip.ParseAddr(q.Gateway)
	return p, gw
}

// Tree is the persona's root tree, relative to the Spine's root.
func (q Persona) Tree() string { return TreeRoot + "/" + q.Name }

// CPUMax renders CPUs as the cgroup v2 cpu.max value for a 100 ms period.
func (q Persona) CPUMax() string {
	const period = 100000
	return fmt.Sprintf("%d %d", int64(q.CPUs*period+0.5), period)
}

// Marshal renders the policy as canonical JSON, the form baked into a Spine: fields in
// declaration order, one line per field, so the same policy always gives the same bytes.
func (p Policy) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(p, "", " ")
	if err != nil {
		return nil, fmt.Errorf("encode policy: %w", err)
	}
	return append(b, '\n'), nil
}

// Size is a byte count written with an optional binary suffix: "64MiB", "512K", "1G".
type Size int64

// UnmarshalText parses a size.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText renders a size in the largest exact binary unit.
func (s Size) MarshalText() ([]byte, error) {
	units := []struct {
		suffix string
		n      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	for _, u := range units {
		if s != 0 && int64(s)%u.n == 0 {
			return []byte(strconv.FormatInt(int64(s)/u.n, 10) + u.suffix), nil
		}
	}
	return []byte(strconv.FormatInt(int64(s), 10)), nil
}

// ParseSize parses "64MiB", "64M", "64m", "4096".
func ParseSize(s string) (Size, error) {
	t, mult := strings.TrimSpace(s), int64(1)
	for _, u := range []struct {
		suffixes []string
		n        int64
	}{
		{[]string{"GiB", "G", "g"}, 1 << 30},
		{[]string{"MiB", "M", "m"}, 1 << 20},
		{[]string{"KiB", "K", "k"}, 1 << 10},
	} {
		for _, suf := range u.suffixes {
			if mult == 1 && strings.HasSuffix(t, suf) {
				t, mult = strings.TrimSuffix(t, suf), u.n
			}
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || n < 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("size %q is not a byte count like 64MiB", s)
	}
	return Size(n * mult), nil
}

// Duration is a time.Duration written as "10s".
type Duration time.Duration

// UnmarshalText parses a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalText renders a Go duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }
