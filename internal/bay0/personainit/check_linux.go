package personainit

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/launch"
	"alpinespine.org/spine/internal/bay0/seccomp/prog"
)

// CheckMain runs persona-check, the child side of an exec health check (see package persona's Check),
// with the arguments after "persona-check". It never returns: it exits with the check's exit
// status (launch.CheckExitSignal plus the signal's number for a check killed by one), or
// with ExitFailure after saying why on stderr, which is the check's own output.
func CheckMain(args []string) {
	runtime.LockOSThread()
	code, stage, err := RunCheck(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "persona-check: %s: %v\n", stage, err)
		code = ExitFailure
	}
	os.Exit(code)
}

// RunCheck takes the persona's root and limits, starts the check as the persona's user under
// its filter, and waits for it; it returns the exit status for persona-check, or the stage
// that failed. The governor forked it into the persona's network, UTS, IPC, PID and cgroup
// namespaces and into a cgroup inside the persona's, in the initial user namespace as root.
//
// The order is persona-init's: the root and the limits while privileged, then no_new_privs
// and the ids, seccomp as late as possible, fds closed before the exec (CVE-2024-21626). The
// ids and the filter are taken by a thread of its own, which forks the check into a new PID
// namespace: the main thread stays root, so the check (the persona's uid) cannot signal it, and
// it can kill the check, and with it everything the check started, when the governor's SIGTERM
// says the check's time is up. Precondition: the calling goroutine is locked to its thread.
func RunCheck(args []string) (code int, stage string, err error) {
	// Before anything else: a SIGTERM that comes before the check is forked ends this process
	// (nothing is left behind); once it is, the SIGTERM is the check's timeout.
	term := make(chan os.Signal, 1)
	signal.Notify(term, unix.SIGTERM)
	fd, err := parseArgs(args)
	if err != nil {
		return 0, "config", err
	}
	f := os.NewFile(uintptr(fd), "config")
	cfg, err := launch.DecodeCheckConfig(f)
	f.Close()
	if err != nil {
		return 0, "config", err
	}
	os.Clearenv()
	filter, err := prog.Decode(cfg.Seccomp)
	if err != nil {
		return 0, "config", err
	}
	steps := []struct {
		name string
		run  func() error
	}{
		{"placement", checkPlacement},
		// Whatever the check leaves behind is reparented here, never to the workload.
		{"subreaper", func() error { return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }},
		{"root", enterCheckRoot},
		{"workdir", func() error { return enterWorkdir(cfg.Workdir) }},
		{"rlimits", func() error { return setRlimits(cfg.Rlimits) }},
		{"close fds", closeExtraFDs},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			return 0, s.name, err
		}
	}
	pid, stage, err := forkCheck(cfg, filter)
	if err != nil {
		return 0, stage, errors.Join(err, endCheck())
	}
	return waitCheck(pid, term), "", nil
}

// forkCheck starts the check from a thread that gives up its privileges and is never
// unlocked: it ends with its goroutine, and no other goroutine ever runs on it.
func forkCheck(cfg launch.CheckConfig, filter prog.Program) (pid int, stage string, err error) {
	type result struct {
		pid   int
		stage string
		err   error
	}
	// The check is forked into the check cgroup (launch.CheckCgroupFD/check), which this
	// process joins for the fork and leaves again, so that it can kill the check's whole tree
	// and outlive it: whatever the check leaves is then reaped here.
	if err := joinCgroup(launch.CheckInner); err != nil {
		return 0, "cgroup", err
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		steps := []struct {
			name string
			run  func() error
		}{
			// The thread's, and so the check's: the persona's, whose root is the persona's
			// cgroup.
			{"cgroup namespace", enterCheckCgroupNS},
			{"privileges", func() error { return dropPrivileges(&launch.IDs{UID: cfg.UID, GID: cfg.GID}) }},
			{"seccomp", func() error { return prog.Install(filter) }},
		}
		for _, s := range steps {
			if err := s.run(); err != nil {
				ch <- result{stage: s.name, err: err}
				return
			}
		}
		pid, err := syscall.ForkExec(cfg.Exec[0], cfg.Exec, &syscall.ProcAttr{Env: Environ(cfg.Env), Files: []uintptr{0, 1, 2}})
		if err != nil {
			err = fmt.Errorf("exec %s: %w", cfg.Exec[0], err)
		}
		ch <- result{pid, "exec", err}
	}()
	r := <-ch
	if err := joinCgroup("."); err != nil && r.err == nil {
		r.stage, r.err = "cgroup", err
	}
	return r.pid, r.stage, r.err
}

// joinCgroup moves this process into the cgroup dir (relative to launch.CheckCgroupFD).
func joinCgroup(dir string) error { return launch.JoinCgroup(launch.CheckCgroupFD, dir) }

// endCheck kills everything in the check cgroup and reaps, until this process has no child
// left. Nothing can leave the cgroup, and every process in it descends from this one, a child
// subreaper: a process whose parent dies is handed here before that parent becomes a zombie,
// so once no child is left, nothing of the check is, and nothing was handed to the workload.
func endCheck() error {
	if err := killCheck(); err != nil {
		return err
	}
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, unix.EINTR), err == nil:
		case errors.Is(err, unix.ECHILD):
			return nil
		default:
			return fmt.Errorf("reap the check's processes: %w", err)
		}
	}
}

// killCheck kills every process of the check cgroup at once.
func killCheck() error { return launch.KillCgroup(launch.CheckCgroupFD, launch.CheckInner) }

// waitCheck waits for the check to end, or for a SIGTERM (its time is up), then kills
// whatever is left of it (endCheck), and returns its exit status for persona-check.
func waitCheck(pid int, term <-chan os.Signal) int {
	type result struct {
		ws  unix.WaitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		for {
			if _, r.err = unix.Wait4(pid, &r.ws, 0, nil); !errors.Is(r.err, unix.EINTR) {
				break
			}
		}
		done <- r
	}()
	var r result
	select {
	case r = <-done:
	case <-term:
		if err := killCheck(); err != nil {
			fmt.Fprintf(os.Stderr, "persona-check: %v\n", err)
		}
		r = <-done
	}
	if err := endCheck(); err != nil {
		fmt.Fprintf(os.Stderr, "persona-check: %v\n", err)
		return ExitFailure
	}
	ws := r.ws
	switch {
	case r.err != nil:
		fmt.Fprintf(os.Stderr, "persona-check: wait: %v\n", r.err)
		return ExitFailure
	case ws.Signaled():
		return launch.CheckExitSignal + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// checkPlacement refuses to go on anywhere but where the governor puts a check: in the initial
// user namespace (the ids it takes are host ids) and in a PID namespace other than the
// machine's. PID 1 takes kernel command line words as arguments; it is never persona-check.
func checkPlacement() error {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return err
	}
	if !InitialUIDMap(string(b)) {
		return errors.New("not in the initial user namespace")
	}
	self, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return err
	}
	machine, err := os.Readlink("/proc/1/ns/pid")
	if err != nil {
		return err
	}
	if os.Getpid() == 1 || self == machine {
		return errors.New("not in a persona's PID namespace")
	}
	return nil
}

// enterCheckRoot makes the persona's root (launch.CheckRootFD, its workload's /proc/PID/root:
// the persona's own mounts, its /tmp and /run included) this process's root and working
// directory, and closes the fd, the last way back to the governor's tree.
func enterCheckRoot() error {
	if err := unix.Fchdir(launch.CheckRootFD); err != nil {
		return fmt.Errorf("enter the persona's root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	return unix.Close(launch.CheckRootFD)
}

// enterCheckCgroupNS makes this thread's cgroup namespace the persona's (launch.CheckPidFD
// names its workload), and closes the fd.
func enterCheckCgroupNS() error {
	err := unix.Setns(launch.CheckPidFD, unix.CLONE_NEWCGROUP)
	unix.Close(launch.CheckPidFD)
	if err != nil {
		return fmt.Errorf("enter the persona's cgroup namespace: %w", err)
	}
	return nil
}
