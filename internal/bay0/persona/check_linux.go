package persona

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/launch"
)

// An exec health check runs a program of the persona's tree inside the persona, with nothing
// the persona lacks. Go cannot enter a user or mount namespace once it has threads, and no agent
// stays inside a persona, so:
//
//	governor (PID 1)                        persona-check (persona-init)      the check
//	  open /proc/PID/root, confirm by pidfd
//	  mkdir LEAF/health, LEAF/health/check
//	  locked thread: setns(pidfd, net uts
//	    ipc pid); clone into
//	    LEAF/health -------------------->   read CheckConfig; child subreaper
//	                                         chroot to the root fd, workdir,
//	                                         rlimits, close fds
//	                                         join health/check for the fork;
//	                                         a thread of its own: setns(pidfd,
//	                                         cgroup), no_new_privs, the persona's
//	                                         host uid/gid, no capabilities,
//	                                         seccomp, fork and exec ---------->  runs in
//	                                         back to health                       health/check
//	  read output tail <--------------------------------------------------------
//	  at the timeout: SIGTERM ---------->   cgroup.kill health/check -------->  (all of it)
//	                                         reap what it left, until empty
//	  exit status <---------------------    exit with the check's status
//	  cgroup.kill LEAF/health, rmdir both
//
// The thread that entered the namespaces is never unlocked: it ends with its goroutine, so no
// other goroutine of PID 1 ever runs in a persona's namespaces. The check runs in the initial
// user namespace as the unprivileged host id the persona's user maps to: it owns exactly what
// the persona's user owns and holds no capability anywhere. persona-check, its parent, is a
// child subreaper that kills the check's cgroup when the check ends and reaps whatever it left,
// so nothing a check starts outlives it or is left to the workload (the persona's PID 1) to
// reap; its main thread stays root, so the check cannot signal it.

// CheckTarget is one exec health check of a running instance.
type CheckTarget struct {
	// PID is the workload in the governor's PID namespace, and Pidfd names it (Check closes
	// Pidfd). The root and the namespaces are taken through Pidfd or while it says the workload
	// still lives, so a pid reused by another persona's process is never entered.
	PID, Pidfd int
	// Cgroup is the instance's leaf.
	Cgroup string
	// Self is the persona-init program (Spec.Self), which persona-check is a mode of.
	Self   string
	Config launch.CheckConfig
}

// checkNamespaces are the persona's namespaces persona-check is forked into. Its user and
// mount namespaces cannot be entered by a process with threads: the check takes the persona's
// root with chroot and runs as the host ids of the persona's user instead. Its cgroup
// namespace is entered by persona-check once it is in its cgroup (CheckPidFD): a clone into a
// cgroup outside the cgroup namespace's root is refused.
const checkNamespaces = unix.CLONE_NEWNET | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWPID

// checkCleanup bounds each wait after a check's end: for its cgroup to empty once killed, and
// for the end of its output.
const checkCleanup = 2 * time.Second

// DupPidfd returns a new pidfd of the workload, for a check. Precondition: Destroy has not
// been called (the supervisor asks on its loop, before it hands the instance to Destroy).
func (in *Instance) DupPidfd() (int, error) {
	if in.pidfd < 0 {
		return -1, errors.New("no pidfd of the workload")
	}
	fd, err := unix.FcntlInt(uintptr(in.pidfd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return -1, fmt.Errorf("dup pidfd: %w", err)
	}
	return fd, nil
}

// Check runs one exec health check until ctx ends, then kills it (and whatever it started):
// nil when it exited 0 in time, else why not; output is the last MaxCheckOutput bytes it wrote
// to stdout and stderr. Check returns only once nothing of the check is left.
func Check(ctx context.Context, sp Spawner, t CheckTarget) (output string, err error) {
	if t.Pidfd < 0 {
		return "", errors.New("no pidfd of the workload")
	}
	defer unix.Close(t.Pidfd)
	root, err := unix.Open(fmt.Sprintf("/proc/%d/root", t.PID), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open the root of pid %d: %w", t.PID, err)
	}
	defer unix.Close(root)
	// A live process's pid is never reused: the root opened is the workload's.
	if err := unix.PidfdSendSignal(t.Pidfd, 0, nil, 0); err != nil {
		return "", fmt.Errorf("workload pid %d: %w", t.PID, err)
	}
	cg, err := newCheckCgroup(t.Cgroup)
	if err != nil {
		return "", err
	}
	defer cg.close()
	exited, helper, outR, err := startCheck(sp, t, root, cg.dir)
	if err != nil {
		return "", errors.Join(err, cg.remove())
	}
	defer outR.Close()
	defer unix.Close(helper)
	tail := NewTail(MaxCheckOutput)
	read := make(chan struct{})
	go func() {
		_, _ = io.Copy(tail, outR)
		close(read)
	}()
	var ws unix.WaitStatus
	timedOut := false
	select {
	case ws = <-exited:
	case <-ctx.Done():
		timedOut = true
		// persona-check kills the check, which takes everything it started with it. The
		// cgroup is killed below in any case.
		err = unix.PidfdSendSignal(helper, unix.SIGTERM, nil, 0)
		if errors.Is(err, unix.ESRCH) {
			err = nil
		}
		select {
		case ws = <-exited:
		case <-time.After(checkCleanup):
			err = errors.Join(err, errors.New("did not end when killed"))
		}
	}
	// Whatever the check left behind (a child that forked away and hangs) ends with it.
	err = errors.Join(err, cg.remove())
	select {
	case <-read:
	case <-time.After(checkCleanup):
		// The write end outlived the check (passed to the workload): stop reading.
		outR.Close()
		<-read
	}
	switch {
	case timedOut:
		err = errors.Join(fmt.Errorf("timed out: %w", context.Cause(ctx)), err)
	case err == nil && !(ws.Exited() && ws.ExitStatus() == 0):
		err = errors.New(Describe(ws))
	}
	return tail.String(), err
}

// startCheck forks persona-check into the persona's namespaces and the cgroup cgfd, and sends
// it its config; it returns persona-check's exit status channel and pidfd, and the read end of
// the check's output.
func startCheck(sp Spawner, t CheckTarget, root, cgfd int) (<-chan unix.WaitStatus, int, *os.File, error) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, -1, nil, err
	}
	defer devnull.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, -1, nil, err
	}
	defer outW.Close()
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		outR.Close()
		return nil, -1, nil, err
	}
	defer cfgR.Close()
	pidfd := -1
	attr := &syscall.ProcAttr{
		Dir: "/",
		// persona-check clears its environment at once.
		Env:   []string{"GOMAXPROCS=1"},
		Files: []uintptr{devnull.Fd(), outW.Fd(), outW.Fd(), cfgR.Fd(), uintptr(root), uintptr(t.Pidfd), uintptr(cgfd)},
		Sys: &syscall.SysProcAttr{
			UseCgroupFD: true,
			CgroupFD:    cgfd,
			Setsid:      true,
			PidFD:       &pidfd,
			// No supplementary group of the governor's, should it ever have one.
			Credential: &syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{}},
		},
	}
	argv := []string{"persona-init", launch.CheckArg, fmt.Sprintf("--config-fd=%d", launch.CheckConfigFD)}
	type result struct {
		exited <-chan unix.WaitStatus
		err    error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: this thread joins the persona's namespaces and ends with the goroutine.
		runtime.LockOSThread()
		if err := unix.Setns(t.Pidfd, checkNamespaces); err != nil {
			ch <- result{err: fmt.Errorf("enter the namespaces of pid %d: %w", t.PID, err)}
			return
		}
		exited, err := sp.Spawn(func() (int, error) { return syscall.ForkExec(t.Self, argv, attr) })
		if err != nil {
			err = fmt.Errorf("start persona-check: %w", err)
		}
		ch <- result{exited, err}
	}()
	r := <-ch
	if r.err == nil && pidfd < 0 {
		// Without a pidfd it could not be told to end; the cgroup below kills it.
		r.err = errors.New("start persona-check: no pidfd")
	}
	if r.err != nil {
		cfgW.Close()
		outR.Close()
		return nil, -1, nil, r.err
	}
	go func() {
		_ = t.Config.Encode(cfgW)
		cfgW.Close()
	}()
	return r.exited, pidfd, outR, nil
}

// checkCgroup is a check's cgroup inside the instance's leaf, held by fds so that a leaf
// removed and made again for the next instance is never touched.
type checkCgroup struct {
	leaf, dir int
}

func newCheckCgroup(leaf string) (*checkCgroup, error) {
	lfd, err := unix.Open(leaf, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", leaf, err)
	}
	if err := unix.Mkdirat(lfd, launch.CheckCgroup, 0o700); err != nil {
		unix.Close(lfd)
		if errors.Is(err, unix.EEXIST) {
			return nil, errors.New("a check of this instance has not ended")
		}
		return nil, fmt.Errorf("make cgroup %s/%s: %w", leaf, launch.CheckCgroup, err)
	}
	dfd, err := unix.Openat(lfd, launch.CheckCgroup, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err == nil {
		if err = unix.Mkdirat(dfd, launch.CheckInner, 0o700); err != nil {
			unix.Close(dfd)
		}
	}
	if err != nil {
		_ = unix.Unlinkat(lfd, launch.CheckCgroup, unix.AT_REMOVEDIR)
		unix.Close(lfd)
		return nil, fmt.Errorf("make cgroup %s/%s/%s: %w", leaf, launch.CheckCgroup, launch.CheckInner, err)
	}
	return &checkCgroup{leaf: lfd, dir: dfd}, nil
}

// kill kills every process of the check's cgroups at once.
func (c *checkCgroup) kill() error { return launch.KillCgroup(c.dir, ".") }

// remove kills what is left in the check's cgroup, waits for it to empty and removes it. A
// cgroup the instance's own end removed already is not an error.
func (c *checkCgroup) remove() error {
	if err := c.kill(); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // removed, empty, with the instance's leaf
		}
		return err
	}
	deadline := time.Now().Add(checkCleanup)
	for delay := 100 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		populated, err := c.populated()
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return err
		}
		if !populated {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the check's cgroup still has processes %s after cgroup.kill", checkCleanup)
		}
		time.Sleep(delay)
	}
	for {
		_ = unix.Unlinkat(c.dir, launch.CheckInner, unix.AT_REMOVEDIR)
		err := unix.Unlinkat(c.leaf, launch.CheckCgroup, unix.AT_REMOVEDIR)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("remove the check's cgroup: %w", err)
		}
		time.Sleep(time.Millisecond)
	}
}

func (c *checkCgroup) populated() (bool, error) { return launch.Populated(c.dir, ".") }

func (c *checkCgroup) close() {
	unix.Close(c.dir)
	unix.Close(c.leaf)
}
