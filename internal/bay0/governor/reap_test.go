package governor

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReaperDispatchesByPid: a child that exits before its spawner has even returned still
// reaches the spawner, and orphans' statuses are collected and dropped.
func TestReaperDispatchesByPid(t *testing.T) {
	var zombies []int
	r := newReaperWith(func() (int, unix.WaitStatus) {
		if len(zombies) == 0 {
			return 0, 0
		}
		pid := zombies[0]
		zombies = zombies[1:]
		return pid, unix.WaitStatus(pid << 8) // exit status = pid, to tell them apart
	}, nil)
	ch, err := r.Spawn(func() (int, error) {
		zombies = append(zombies, 7, 42) // 42 exits at once; 7 is an orphan
		return 42, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r.reap()
	select {
	case ws := <-ch:
		if ws.ExitStatus() != 42 {
			t.Errorf("status %v delivered to pid 42's spawner", ws)
		}
	default:
		t.Fatal("pid 42's status was not delivered")
	}
	if len(r.waiting) != 0 || len(zombies) != 0 {
		t.Errorf("left behind: waiting %v, zombies %v", r.waiting, zombies)
	}
	if _, err := r.Spawn(func() (int, error) { return 0, errors.New("clone failed") }); err == nil {
		t.Error("a failed start was registered")
	}
}
