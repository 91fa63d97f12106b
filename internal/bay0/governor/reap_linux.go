package governor

import (
	"errors"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// newReaper returns PID 1's reaper, already listening for SIGCHLD, so that no child forked
// after it can exit unnoticed.
func newReaper() *reaper {
	sig := make(chan os.Signal, 16)
	signal.Notify(sig, unix.SIGCHLD)
	return newReaperWith(wait4, sig)
}

func wait4() (int, unix.WaitStatus) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, 0
		}
		return pid, ws
	}
}

// reapForever collects children for as long as PID 1 lives.
func (r *reaper) reapForever() error {
	for range r.sig {
		r.reap()
	}
	return errors.New("signal channel closed")
}
