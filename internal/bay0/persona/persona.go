// Package persona launches one persona instance: a workload in its own PID, mount, network,
// IPC, UTS, cgroup and user namespaces, in a cgroup v2 leaf with the policy's limits, set up
// from the inside by persona-init (the Spine's /bin/persona-init) and then exec'd.
//
// This file holds the pure parts: the Spec of a persona, the versioned Config handed to
// persona-init, and the values written to the cgroup. The kernel-facing parts are in the
// *_linux.go files; the child's side is package personainit.
package persona

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/launch"
	"alpinespine.org/spine/internal/format/policy"
)

// Each persona gets its own range of IDBlock uids and gids, starting at IDBase, so that even a
// process that escaped its namespaces is an unprivileged uid no other persona shares.
const (
	IDBase  = launch.IDBase
	IDBlock = launch.IDBlock
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
	RunAs launch.IDs
	// ShmSize bounds the persona's tmpfs /dev/shm.
	ShmSize int64
	// Rlimits are the workload's resource limits, soft = hard.
	Rlimits []launch.Rlimit
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
	// Self is the persona-init program to run: the Spine's launch.InitPath, or a binary that has
	// a persona-init mode (spine run re-executes /proc/self/exe).
	Self string
	// CgroupParent is the cgroup v2 directory under which the persona's leaf is made.
	CgroupParent string
	// Uplink, if not nil, gives the persona a macvlan device on the machine's network card.
	Uplink *launch.Uplink
	// StopSignal asks the workload to end; StopTimeout is how long it has before its cgroup
	// is killed.
	StopSignal  unix.Signal
	StopTimeout time.Duration
	// Courier, if set, is the persona's end of its channel to bay0 (the persona is the
	// machine's courier): every instance gets it.
	Courier *os.File
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
		RunAs:        launch.IDs{UID: uid, GID: gid},
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
		Self:         path.Join(spineRoot, launch.InitPath),
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
		u := &launch.Uplink{Address: p.Address, Gateway: p.Gateway, Address6: p.Address6, Gateway6: p.Gateway6}
		if _, err := u.Parse(); err != nil {
			return Spec{}, fmt.Errorf("persona %q: %w", p.Name, err)
		}
		s.Uplink = u
	}
	return s, nil
}

// ErrNoPersist refuses a persona with data = true on a machine whose /persist is not mounted.
var ErrNoPersist = errors.New("data = true but /persist is not mounted")

// RlimitsOf returns a policy entry's rlimits in resource order.
func RlimitsOf(p policy.Persona) []launch.Rlimit {
	var out []launch.Rlimit
	for name, v := range p.Rlimits {
		if r, ok := policy.Rlimits[name]; ok {
			out = append(out, launch.Rlimit{Resource: r, Value: v})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Resource < out[j].Resource })
	return out
}

// Config renders the Config of one launch of s.
func (s Spec) Config() launch.Config {
	return launch.Config{Version: launch.ConfigVersion, Name: s.Name, Tree: s.Tree, Exec: s.Exec, Env: s.Env,
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

func (s Spec) user() *launch.IDs {
	if s.RunAs == (launch.IDs{}) {
		return nil
	}
	u := s.RunAs
	return &u
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
