// Package personainit is persona-init: the child side of a persona launch. The governor clones
// it into the persona's fresh namespaces and cgroup; it builds the persona's root from the
// inside, gives up every privilege, installs the seccomp filter and execs the workload. Go
// cannot run code between fork and exec, so this runs in a program of its own: the small
// cmd/persona-init, /bin/persona-init of the Spine (launch.InitPath), which links this package,
// package launch and little else, so that each launch pays for a small Go start rather than
// for re-executing the whole of bay0 (issue 17). spine re-executes itself in this mode for
// `spine run` on a build host.
//
// The order is fixed (see Run): uplink (if any, while the governor's /proc can still set its
// network namespace's sysctls) -> mounts -> masked and read-only /proc paths -> hostname ->
// loopback -> no_new_privs -> capabilities (and the policy's user) -> release (the parent sets
// the CPU quota) -> seccomp -> close-on-exec on every extra fd -> exec. seccomp comes as late
// as possible so that the setup itself needs none of the calls it forbids; fds are closed last so that no fd of the governor's world reaches the workload
// (CVE-2024-21626 leaked a host directory fd into runc containers).
//
// The same steps serve persona-check (check_linux.go), which runs a persona's exec health check
// inside the persona.
package personainit

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"alpinespine.org/spine/internal/bay0/launch"
	"alpinespine.org/spine/internal/bay0/seccomp/prog"
)

// ExitFailure is persona-init's exit status when the launch fails before exec.
const ExitFailure = 255

// Main runs persona-init with the arguments after "persona-init". It never returns: it execs
// the workload or exits with ExitFailure after reporting why on the sync pipe (or, before the
// config is read, on stderr, which goes to the console).
func Main(args []string) {
	runtime.LockOSThread()
	stage, err := Run(args)
	sync := pipeFile(launch.SyncFD, "sync")
	if werr := launch.WriteReport(sync, launch.Report{Stage: stage, Error: err.Error()}); werr != nil {
		fmt.Fprintf(os.Stderr, "persona-init: %s: %v\n", stage, err)
	}
	os.Exit(ExitFailure)
}

// Run does the whole setup and execs the workload; it returns only on failure, with the
// stage that failed. Precondition: the calling goroutine is locked to its thread, which is
// the one that execs (capabilities, no_new_privs and the filter are per thread).
func Run(args []string) (stage string, err error) {
	fd, err := parseArgs(args)
	if err != nil {
		return "config", err
	}
	f := pipeFile(fd, "config")
	cfg, err := launch.DecodeConfig(f)
	f.Close()
	if err != nil {
		return "config", err
	}
	os.Clearenv()
	filter, err := prog.Decode(cfg.Seccomp)
	if err != nil {
		return "config", err
	}
	steps := []struct {
		name string
		run  func() error
	}{
		// The uplink's settings are written through the governor's /proc, before the
		// persona's own (with a read-only /proc/sys) replaces it.
		{"uplink", func() error { return uplinkUp(cfg.Uplink) }},
		{"mounts", func() error { return setupRoot(cfg) }},
		{"hostname", func() error { return setHostname(cfg.Name) }},
		{"loopback", loopbackUp},
		{"workdir", func() error { return enterWorkdir(cfg.Workdir) }},
		{"rlimits", func() error { return setRlimits(cfg.Rlimits) }},
		{"privileges", func() error { return dropPrivileges(cfg.User) }},
		{"release", awaitRelease},
		{"seccomp", func() error { return prog.Install(filter) }},
		{"close fds", closeExtraFDs},
		{"courier channel", func() error { return courierChannel(cfg.Courier) }},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			return s.name, err
		}
	}
	sync := pipeFile(launch.SyncFD, "sync")
	if err := launch.WriteReport(sync, launch.Report{Stage: launch.StageExec}); err != nil {
		return "exec", fmt.Errorf("report exec: %w", err)
	}
	return "exec", execWorkload(cfg)
}

// awaitRelease reports the setup done and waits for the parent to set the limits that wait
// for it (the CPU quota) and let it go on: a release pipe closed without its byte is a parent
// that gave up.
func awaitRelease() error {
	sync := pipeFile(launch.SyncFD, "sync")
	if err := launch.WriteReport(sync, launch.Report{Stage: launch.StageReady}); err != nil {
		return fmt.Errorf("report ready: %w", err)
	}
	rel := pipeFile(launch.ReleaseFD, "release")
	defer rel.Close()
	var b [1]byte
	if n, err := rel.Read(b[:]); n != 1 {
		return fmt.Errorf("not released by the parent: %v", err)
	}
	return nil
}

func parseArgs(args []string) (int, error) {
	if len(args) != 1 || !strings.HasPrefix(args[0], "--config-fd=") {
		return 0, fmt.Errorf("usage: persona-init --config-fd=N (got %q)", args)
	}
	n, err := strconv.Atoi(strings.TrimPrefix(args[0], "--config-fd="))
	if err != nil || n < 3 {
		return 0, fmt.Errorf("bad config fd in %q", args[0])
	}
	return n, nil
}

// Environ is the workload's environment: the policy's, plus PATH and HOME if it sets none.
func Environ(env []string) []string {
	out := append([]string{}, env...)
	has := func(k string) bool {
		for _, e := range env {
			if strings.HasPrefix(e, k+"=") {
				return true
			}
		}
		return false
	}
	if !has("PATH") {
		out = append(out, "PATH=/usr/local/bin:/usr/bin:/bin")
	}
	if !has("HOME") {
		out = append(out, "HOME=/")
	}
	return out
}

// maskedPaths of /proc, as runc masks them: files are covered with /dev/null, directories
// with an empty read-only tmpfs. They leak host information or give host-wide handles.
func maskedPaths() []string {
	return []string{"acpi", "asound", "interrupts", "kcore", "keys", "latency_stats", "sched_debug",
		"scsi", "sysrq-trigger", "timer_list", "timer_stats"}
}

// readonlyPaths of /proc: host-wide knobs a persona may read but never turn.
func readonlyPaths() []string { return []string{"bus", "fs", "irq", "sys"} }

// deviceNodes are bind-mounted from the governor's /dev into the persona's minimal /dev.
func deviceNodes() []string { return []string{"null", "zero", "full", "random", "urandom", "tty"} }

// reserved are the top-level names of the persona's root that persona-init mounts itself;
// the tree's own entries of those names, if any, are not used.
func reserved(name string, data bool) bool {
	switch name {
	case "proc", "dev", "tmp", "run", "sys":
		return true
	case "data":
		return data
	}
	return false
}

// tmpfsData renders the mount options of a size-limited tmpfs; mode is octal permission bits
// (0o1777 for a sticky /tmp).
func tmpfsData(size int64, mode uint32) string {
	return fmt.Sprintf("size=%d,mode=%o", size, mode)
}

// etcFiles are the files persona-init writes into the persona's /etc when its tree has none of
// that name: /etc/hosts always, /etc/resolv.conf when the policy names servers.
func etcFiles(cfg launch.Config) map[string]string {
	files := map[string]string{"hosts": launch.HostsFile(cfg.Name, cfg.Uplink)}
	if len(cfg.DNS) > 0 {
		files["resolv.conf"] = launch.ResolvConf(cfg.DNS)
	}
	return files
}

// owner renders the tmpfs options that give a mount's root to the workload's user ("" for
// the persona's root).
func owner(u *launch.IDs) string {
	if u == nil {
		return ""
	}
	return fmt.Sprintf(",uid=%d,gid=%d", u.UID, u.GID)
}

// InitialUIDMap reports whether a /proc/PID/uid_map is the initial user namespace's, the
// identity over all 2^32-1 ids.
func InitialUIDMap(m string) bool {
	return strings.Join(strings.Fields(m), " ") == "0 0 4294967295"
}
