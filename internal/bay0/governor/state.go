package governor

import (
	"fmt"
	"sync"

	"alpinespine.org/spine/internal/bay0/stage1"
	"alpinespine.org/spine/internal/format/bootctl"
)

// UncleanReset is recorded as the reason of the coming reset while the governor runs: a clean
// end overwrites it, so finding it at the next boot means the machine died without a word
// (watchdog reset, kernel panic, power loss).
const UncleanReset = "unclean: no reason recorded (watchdog reset, kernel panic or power loss)"

// records serialises every change of the boot-control record made by the governor.
type records struct {
	mu   sync.Mutex
	dev  stage1.StateDevice
	rec  bootctl.Record
	copy int
}

func (r *records) load() error {
	rec, c, err := bootctl.Load(r.dev)
	if err != nil {
		return fmt.Errorf("read boot-control record: %w", err)
	}
	r.rec, r.copy = rec, c
	return nil
}

// snapshot returns the current record.
func (r *records) snapshot() bootctl.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rec
}

// update applies change to the record and stores it (the older copy, then a flush).
func (r *records) update(change func(*bootctl.Record)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := r.rec
	change(&next)
	if next == r.rec {
		return nil
	}
	c, err := bootctl.Store(r.dev, r.rec, r.copy, next)
	if err != nil {
		return err
	}
	next.Seq = r.rec.Seq + 1
	r.rec, r.copy = next, c
	return nil
}
