package persona

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"alpinespine.org/spine/internal/bay0/launch"
	"alpinespine.org/spine/internal/bay0/persist"
)

// StartTimeout bounds a launch, clone to exec (generous: QEMU without KVM is slow).
const StartTimeout = 20 * time.Second

// DestroyTimeout bounds the wait for a killed persona's cgroup to empty. It is well under the
// watchdog window, so that a persona that will not die cannot stall the supervisor into a
// machine reset; a leaf left behind is emptied again before the persona's next start.
const DestroyTimeout = 3 * time.Second

// cloneFlags are the persona's namespaces. CLONE_NEWUSER makes the others owned by the
// persona's own user namespace, so that persona-init can set them up as its (mapped) root.
const cloneFlags = unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWNET |
	unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWCGROUP

// Spawner forks a child and delivers its wait status. In the governor it is PID 1's reaper,
// which is the only code that waits for children, so that no status is stolen. start runs
// while the reaper cannot reap, so the pid is known before its status can arrive.
type Spawner interface {
	Spawn(start func() (pid int, err error)) (<-chan unix.WaitStatus, error)
}

// SelfWaiting is the Spawner of a process that is not a reaper for anyone else (spine run on the
// build host, a benchmark's guest): each child is waited for by a goroutine of its own.
type SelfWaiting struct{}

// Spawn starts the child and waits for it in the background.
func (SelfWaiting) Spawn(start func() (int, error)) (<-chan unix.WaitStatus, error) {
	pid, err := start()
	if err != nil {
		return nil, err
	}
	ch := make(chan unix.WaitStatus, 1)
	go func() {
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(pid, &ws, 0, nil)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
		ch <- ws
	}()
	return ch, nil
}

// Instance is one launch of a persona whose workload is running.
type Instance struct {
	pid int
	// pidfd names the workload itself, so a signal never reaches a process that reused its
	// pid after it was reaped; -1 if it could not be opened.
	pidfd   int
	cgroup  *Cgroup
	startup time.Duration
	exited  <-chan unix.WaitStatus
}

// PID is the workload's pid in the governor's PID namespace.
func (in *Instance) PID() int { return in.pid }

// Startup is the time from the clone to the workload's exec.
func (in *Instance) Startup() time.Duration { return in.startup }

// Exited delivers the workload's wait status once. The workload is PID 1 of the persona's PID
// namespace: when it ends, the kernel kills everything else in the namespace.
func (in *Instance) Exited() <-chan unix.WaitStatus { return in.exited }

// OOMKills is the number of processes the OOM killer took in this instance's cgroup.
func (in *Instance) OOMKills() int64 {
	if in.cgroup == nil {
		return 0
	}
	ev, err := in.cgroup.Events("memory.events")
	if err != nil {
		return 0
	}
	return ev["oom_kill"]
}

// Memory samples the instance's memory pressure (see MemoryStat).
func (in *Instance) Memory() (MemoryStat, error) {
	if in.cgroup == nil {
		return MemoryStat{}, errors.New("no cgroup")
	}
	return in.cgroup.Memory()
}

// Signal sends sig to the workload, the init of the persona's PID namespace. The kernel
// delivers it only if the workload handles it (pid_namespaces(7)): a workload that ignores its
// stop signal is killed when its grace period ends. A workload that already ended is not an
// error.
func (in *Instance) Signal(sig unix.Signal) error {
	var err error
	if in.pidfd >= 0 {
		err = unix.PidfdSendSignal(in.pidfd, sig, nil, 0)
	} else {
		err = unix.Kill(in.pid, sig)
	}
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal %d to persona pid %d: %w", sig, in.pid, err)
	}
	return nil
}

// Destroy kills everything of the instance and removes its cgroup. Its mount namespace, and so
// its tmpfs /tmp and /run, die with its last process.
func (in *Instance) Destroy() error {
	if in.pidfd >= 0 {
		unix.Close(in.pidfd)
		in.pidfd = -1
	}
	if in.cgroup == nil {
		if err := unix.Kill(in.pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill %d: %w", in.pid, err)
		}
		return nil
	}
	return in.cgroup.Destroy(DestroyTimeout)
}

// Start launches one instance of s and returns once its workload is exec'd. Its stdout and
// stderr go to out, line by line, prefixed with "persona NAME: ". On failure nothing of the
// instance is left behind.
func Start(s Spec, sp Spawner, out io.Writer) (*Instance, error) {
	cg, err := NewCgroup(s.CgroupParent, s.Name, s.Limits)
	if err != nil {
		return nil, &StartError{Name: s.Name, Err: err}
	}
	in, err := start(s, sp, out, cg)
	if err != nil {
		// Killing the leaf ends the child if it got that far; the reaper collects it.
		_ = cg.Destroy(DestroyTimeout)
		return nil, err
	}
	return in, nil
}

// StartUnbounded launches one instance of s like Start, in the same namespaces and under the
// same filter, but in no cgroup of its own and with no uplink: for spine run on a build host,
// where nothing needs the limits. Destroy kills its PID namespace's init, which takes the rest.
func StartUnbounded(s Spec, sp Spawner, out io.Writer) (*Instance, error) {
	s.Uplink = nil
	return start(s, sp, out, nil)
}

func start(s Spec, sp Spawner, out io.Writer, cg *Cgroup) (*Instance, error) {
	fail := func(stage string, err error) error { return &StartError{Name: s.Name, Stage: stage, Err: err} }
	// childEnds are the child's copies: closed as soon as it is forked (or on any return).
	var childEnds []*os.File
	defer func() {
		for _, f := range childEnds {
			f.Close()
		}
	}()
	cgfd := -1
	if cg != nil {
		fd, err := cg.Open()
		if err != nil {
			return nil, fail("", err)
		}
		cgfd = fd
		childEnds = append(childEnds, os.NewFile(uintptr(cgfd), cg.Path))
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fail("", err)
	}
	childEnds = append(childEnds, devnull)
	syncR, syncW, err := os.Pipe()
	if err != nil {
		return nil, fail("", err)
	}
	defer syncR.Close()
	childEnds = append(childEnds, syncW)
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, fail("", err)
	}
	childEnds = append(childEnds, cfgR)
	defer func() {
		if cfgW != nil {
			cfgW.Close()
		}
	}()
	relR, relW, err := os.Pipe()
	if err != nil {
		return nil, fail("", err)
	}
	childEnds = append(childEnds, relR)
	// Closed without its byte on any failure: persona-init then ends without exec.
	defer relW.Close()
	logR, logW, err := os.Pipe()
	if err != nil {
		return nil, fail("", err)
	}
	childEnds = append(childEnds, logW)
	forked := false
	defer func() {
		if !forked {
			logR.Close()
		}
	}()
	files := []uintptr{devnull.Fd(), logW.Fd(), logW.Fd(), cfgR.Fd(), syncW.Fd(), relR.Fd()}
	if s.DataDir != "" {
		data, err := detachedData(s)
		if err != nil {
			return nil, fail("", err)
		}
		childEnds = append(childEnds, data)
		files = append(files, data.Fd())
	}
	if s.Courier != nil {
		for len(files) < launch.CourierFD {
			files = append(files, ^uintptr(0)) // closed in the child
		}
		files = append(files, s.Courier.Fd())
	}
	ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(s.UID), Size: IDBlock}}
	gids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(s.GID), Size: IDBlock}}
	attr := &syscall.ProcAttr{
		Dir: "/",
		// persona-init needs one thread: fewer threads start faster and count less
		// against pids.max. It clears its environment at once.
		Env:   []string{"GOMAXPROCS=1"},
		Files: files,
		Sys: &syscall.SysProcAttr{
			Cloneflags:  cloneFlags,
			UidMappings: ids,
			GidMappings: gids,
			UseCgroupFD: cg != nil,
			CgroupFD:    cgfd,
			Setsid:      true,
			// Become the namespace's root (the persona's first host id) before the exec, or
			// persona-init runs as the unmapped overflow id with no capabilities at all.
			// setgroups is denied in the namespace; the governor has no supplementary groups.
			Credential: &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true},
		},
	}
	argv := []string{"persona-init", launch.InitArg, fmt.Sprintf("--config-fd=%d", launch.ConfigFD)}
	started := time.Now()
	pid, pidfd := 0, -1
	exited, err := sp.Spawn(func() (int, error) {
		var err error
		pid, err = syscall.ForkExec(s.Self, argv, attr)
		if err == nil {
			// The spawner cannot reap the child yet: the pid is still ours.
			pidfd, _ = unix.PidfdOpen(pid, 0)
		}
		return pid, err
	})
	if err != nil {
		return nil, fail("", fmt.Errorf("clone: %w", err))
	}
	forked = true
	pidfdOwned := false
	defer func() {
		if !pidfdOwned && pidfd >= 0 {
			unix.Close(pidfd)
		}
	}()
	for _, f := range childEnds {
		f.Close()
	}
	childEnds = nil
	cfg := s.Config()
	// Raising a hard limit takes CAP_SYS_RESOURCE in the initial user namespace, which only
	// the governor has: it sets them on the child, which waits for its config; persona-init
	// sets them again just before the exec (the Go runtime would otherwise put back the open
	// files limit it found at its start).
	for _, r := range s.Rlimits {
		lim := unix.Rlimit{Cur: r.Value, Max: r.Value}
		if err := unix.Prlimit(pid, r.Resource, &lim, nil); err != nil {
			logR.Close()
			return nil, fail("rlimits", fmt.Errorf("prlimit %d: %w", r.Resource, err))
		}
	}
	if s.Uplink != nil {
		// persona-init waits for its config, so the device is there before it looks.
		device, err := attachUplink(pid, s.Name)
		if err != nil {
			logR.Close()
			return nil, fail("uplink", err)
		}
		u := *s.Uplink
		u.Device = device
		cfg.Uplink = &u
	}
	go func(w *os.File) {
		_ = cfg.Encode(w)
		w.Close()
	}(cfgW)
	cfgW = nil
	go func() {
		_ = CopyLines(out, logR, "persona "+s.Name+": ")
		logR.Close()
	}()
	if err := syncR.SetReadDeadline(started.Add(StartTimeout)); err != nil {
		return nil, fail("", err)
	}
	stage, err := ReadReports(syncR, func() error {
		if cg != nil {
			if err := cg.Set(s.Limits.ExecFiles()); err != nil {
				return err
			}
		}
		if _, err := relW.Write([]byte{1}); err != nil {
			return fmt.Errorf("release persona-init: %w", err)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrNoExec) {
			// Say how the child ended, if it did.
			select {
			case ws := <-exited:
				err = fmt.Errorf("%w: %s", err, Describe(ws))
			case <-time.After(time.Second):
			}
		}
		return nil, fail(stage, err)
	}
	pidfdOwned = true
	return &Instance{pid: pid, pidfd: pidfd, cgroup: cg, startup: time.Since(started), exited: exited}, nil
}

// detachedData returns a detached bind mount of the persona's data directory (open_tree),
// with nosuid, nodev and, unless the policy allows it, noexec. It is made here, in the
// governor's user namespace, because inside the persona's the flags of /persist would be
// locked; persona-init attaches it at /data with move_mount.
func detachedData(s Spec) (*os.File, error) {
	root, name := filepath.Split(s.DataDir)
	// /data belongs to the user the workload runs as.
	uid, gid := s.RunAs.Host(s.UID)
	if _, err := persist.EnsureSubtree(root, persist.Subtree{Name: name, UID: int(uid), GID: int(gid), Limit: s.DataSize}); err != nil {
		return nil, err
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, s.DataDir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("open_tree %s: %w", s.DataDir, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC}
	if s.DataExec {
		attr.Attr_set &^= unix.MOUNT_ATTR_NOEXEC
		attr.Attr_clr = unix.MOUNT_ATTR_NOEXEC
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set mount flags of %s: %w", s.DataDir, err)
	}
	return os.NewFile(uintptr(fd), s.DataDir), nil
}
