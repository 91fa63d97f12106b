package launch

// This file is what the governor and persona-check say to each other: persona-check is the
// helper that runs a persona's exec health check inside the persona (see package persona's
// check_linux.go for the whole protocol, and package personainit's for the child's side).

import (
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// IDBase is the first host id of the personas' ranges: below it are the machine's own ids,
// root among them.
const IDBase = 100000

// CheckArg is the first argument that makes bay0 persona-check: the helper that enters a
// persona's root as its user, under its filter, and execs its exec health check.
const CheckArg = "persona-check"

// The fds persona-check receives beside stdin, stdout and stderr (both the output pipe).
const (
	CheckConfigFD = 3 // the CheckConfig, one JSON document, then EOF
	CheckRootFD   = 4 // the persona's root directory, opened through /proc/PID/root
	CheckPidFD    = 5 // a pidfd of the workload, to enter its cgroup namespace
	CheckCgroupFD = 6 // the CheckCgroup directory
)

// CheckCgroup is the name of the cgroup, inside the instance's leaf, that persona-check runs
// in, and CheckInner the one inside it that the check runs in: both are charged to the
// persona's limits; persona-check kills CheckInner when the check ends, and the governor kills
// CheckCgroup.
const (
	CheckCgroup = "health"
	CheckInner  = "check"
)

// CheckConfigVersion is the version of CheckConfig; persona-check refuses any other.
const CheckConfigVersion = 1

// maxCheckConfig bounds the config persona-check reads: a filter, an argv and an environment.
const maxCheckConfig = 1 << 20

// CheckConfig is what the governor tells persona-check, as one JSON document on CheckConfigFD.
type CheckConfig struct {
	Version int    `json:"version"`
	Name    string `json:"name"`
	// Exec is the check's argv; Env and Workdir are the workload's.
	Exec    []string `json:"exec"`
	Env     []string `json:"env,omitempty"`
	Workdir string   `json:"workdir,omitempty"`
	// UID and GID are the HOST ids the workload's user maps to: the check runs in the initial
	// user namespace, where it must be the persona's unprivileged id, never root.
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
	// Rlimits and Seccomp are the workload's.
	Rlimits []Rlimit `json:"rlimits,omitempty"`
	Seccomp []byte   `json:"seccomp"`
}

// CheckExitSignal is added to the signal number of a check killed by one, as persona-check's
// exit status (a shell's convention: 137 is SIGKILL).
const CheckExitSignal = 128

// Encode writes c as one JSON document.
func (c CheckConfig) Encode(w io.Writer) error { return encodeJSON(w, c, "check config") }

// DecodeCheckConfig reads exactly one CheckConfig from r (to EOF), strictly, as DecodeConfig
// reads a Config.
func DecodeCheckConfig(r io.Reader) (CheckConfig, error) {
	var c CheckConfig
	if err := decodeJSON(r, maxCheckConfig, &c, "check config"); err != nil {
		return CheckConfig{}, err
	}
	if err := c.validate(); err != nil {
		return CheckConfig{}, fmt.Errorf("check config: %w", err)
	}
	// An empty list and an absent one mean the same: keep one form.
	if len(c.Env) == 0 {
		c.Env = nil
	}
	if len(c.Rlimits) == 0 {
		c.Rlimits = nil
	}
	return c, nil
}

func (c CheckConfig) validate() error {
	switch {
	case c.Version != CheckConfigVersion:
		return fmt.Errorf("version %d, want %d", c.Version, CheckConfigVersion)
	case c.Name == "" || strings.ContainsAny(c.Name, "/\x00") || len(c.Name) > 64:
		return fmt.Errorf("bad name %q", c.Name)
	case len(c.Exec) == 0 || !path.IsAbs(c.Exec[0]):
		return errors.New("exec must start with an absolute path")
	case c.Workdir != "" && !path.IsAbs(c.Workdir):
		return fmt.Errorf("workdir %q is not absolute", c.Workdir)
	case c.UID < IDBase || c.GID < IDBase:
		// Below IDBase are the machine's own ids: root, and whatever the Spine's files belong to.
		return fmt.Errorf("ids %d:%d are not a persona's (below %d)", c.UID, c.GID, IDBase)
	case len(c.Seccomp) == 0:
		return errors.New("no seccomp program")
	}
	for _, r := range c.Rlimits {
		if r.Resource < 0 || r.Resource >= 16 {
			return fmt.Errorf("rlimit resource %d is not one of Linux's", r.Resource)
		}
	}
	for _, s := range append(append([]string{}, c.Exec...), c.Env...) {
		if strings.IndexByte(s, 0) >= 0 {
			return errors.New("NUL byte in exec or env")
		}
	}
	return nil
}
