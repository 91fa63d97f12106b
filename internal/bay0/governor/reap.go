package governor

import (
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// reaper is the only code in PID 1 that waits for children. Every child the governor makes
// is forked through Spawn, which records its pid before the reaper can see it exit; the
// reaper hands each status to whoever forked that pid, and silently collects everything else
// (orphans re-parented to PID 1). Nothing else may call wait: os/exec's Cmd.Wait would race
// with the reaper and lose.
type reaper struct {
	// mu is held while a child is forked and while statuses are collected, so that a pid is
	// always registered before its status can be collected.
	mu      sync.Mutex
	waiting map[int]chan unix.WaitStatus
	// wait collects one exited child without blocking: its pid, or 0 when there is none.
	wait func() (int, unix.WaitStatus)
	// sig delivers SIGCHLD.
	sig <-chan os.Signal
}

func newReaperWith(wait func() (int, unix.WaitStatus), sig <-chan os.Signal) *reaper {
	return &reaper{waiting: map[int]chan unix.WaitStatus{}, wait: wait, sig: sig}
}

// Spawn runs start, which forks one child, and returns the channel its wait status will
// arrive on.
func (r *reaper) Spawn(start func() (pid int, err error)) (<-chan unix.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := start()
	if err != nil {
		return nil, err
	}
	ch := make(chan unix.WaitStatus, 1)
	r.waiting[pid] = ch
	return ch, nil
}

// reap collects every child that has exited and dispatches the statuses of known ones.
func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		pid, ws := r.wait()
		if pid <= 0 {
			return
		}
		if ch, ok := r.waiting[pid]; ok {
			ch <- ws // buffered: never blocks
			delete(r.waiting, pid)
		}
	}
}
