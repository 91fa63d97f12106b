package persona

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/launch"
)

// The launch protocol. persona-init never answers on the config pipe and the parent never
// writes on the sync pipe; the sync pipe is close-on-exec in the child, so the parent's EOF
// after an "exec" report is the proof that the workload is running.
//
//	governor (parent)                            persona-init (child)
//	-----------------                            --------------------
//	leaf cgroup + limits but the CPU quota
//	pipes: config, sync, release, log
//	clone3(NEWUSER|NEWPID|NEWNS|NEWNET|NEWIPC|NEWUTS|NEWCGROUP,
//	       CLONE_INTO_CGROUP) ---------------->  (blocks until the id maps are written)
//	write uid_map, gid_map ------------------->  execve /proc/self/exe persona-init --config-fd=3
//	uplink only: macvlan into its netns
//	Config JSON, close ----- config pipe ---->   read Config to EOF
//	                                             mounts, pivot_root, hostname, lo up,
//	                                             eth0 address, up, default route,
//	                                             rlimits, no_new_privs, drop caps
//	                         <--- sync pipe ---  {"stage":"ready"}
//	CPU quota (cpu.max) on the leaf
//	one byte, close ------- release pipe ---->   read the byte
//	                                             seccomp, close-on-exec on every fd >= 3
//	                         <--- sync pipe ---  {"stage":"exec"}
//	                                             execve(workload)
//	EOF after "exec": running                    on any error: {"stage":S,"error":E}, exit 255
//	anything else: kill the leaf, StartError
//
// The CPU quota waits for "ready" because the setup is bay0's own work, not the workload's:
// under a quota of a tenth of a core it would take ten times as long. Memory and pids limits
// hold from the clone. A release pipe closed without its byte means the parent gave up:
// persona-init fails without exec.

// maxReports bounds what the parent reads from the sync pipe.
const maxReports = 64 << 10

// StartError is a launch that did not reach the workload.
type StartError struct {
	Name  string
	Stage string // the step of persona-init that failed, or "" if it never reported
	Err   error
}

func (e *StartError) Error() string {
	if e.Stage == "" {
		return fmt.Sprintf("start persona %q: %v", e.Name, e.Err)
	}
	return fmt.Sprintf("start persona %q: %s: %v", e.Name, e.Stage, e.Err)
}

func (e *StartError) Unwrap() error { return e.Err }

// ErrNoExec is a persona-init that ended without reaching exec and without saying why (it
// could not even read its config, or it was killed).
var ErrNoExec = errors.New("persona-init ended before exec")

// ReadReports reads the child's reports until EOF and says whether the workload was exec'd:
// success is an "exec" report, after a "ready" one, that no error report follows. On the
// "ready" report it calls release, which sets the limits that wait for the end of the setup
// and lets persona-init go on; a failed release is the stage "release"'s error.
func ReadReports(r io.Reader, release func() error) (stage string, err error) {
	dec := json.NewDecoder(io.LimitReader(r, maxReports))
	execd, ready := false, false
	for {
		var rep launch.Report
		if err := dec.Decode(&rep); err != nil {
			if errors.Is(err, io.EOF) {
				if execd {
					return "", nil
				}
				return "", ErrNoExec
			}
			return stage, fmt.Errorf("read persona-init report: %w", err)
		}
		stage = rep.Stage
		if rep.Error != "" {
			return rep.Stage, errors.New(rep.Error)
		}
		switch {
		case rep.Stage == launch.StageReady && !ready:
			ready = true
			if err := release(); err != nil {
				return "release", err
			}
		case rep.Stage == launch.StageExec && ready:
			execd = true
		default:
			return rep.Stage, fmt.Errorf("persona-init reported %q out of order", rep.Stage)
		}
	}
}

// Describe says how a process ended, in the words of the console log.
func Describe(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled() && ws.Signal() == unix.SIGSYS:
		return "killed by seccomp (SIGSYS)"
	case ws.Signaled():
		return "killed by signal " + unix.SignalName(ws.Signal())
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}
