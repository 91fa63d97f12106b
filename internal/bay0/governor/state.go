package governor

import (
	"fmt"
	"sync"

	"alpinespine.org/spine/internal/format/bootctl"
	"alpinespine.org/spine/internal/format/event"
	"alpinespine.org/spine/internal/format/handoff"
)

// records serialises every change of the boot-control record made by the governor. The
// changes themselves are bootctl's pure functions; records only stores their results.
type records struct {
	mu   sync.Mutex
	dev  bootctl.Device
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

// change applies f to the record and stores the result (the older copy, then a flush) when
// it differs; it returns the record now on the device.
func (r *records) change(f func(bootctl.Record) (bootctl.Record, error)) (bootctl.Record, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	next, err := f(r.rec)
	if err != nil {
		return r.rec, err
	}
	if next == r.rec {
		return r.rec, nil
	}
	rec, c, err := bootctl.Store(r.dev, r.rec, r.copy, next)
	if err != nil {
		return r.rec, err
	}
	r.rec, r.copy = rec, c
	return rec, nil
}

// set is change for a change that cannot be refused.
func (r *records) set(f func(bootctl.Record) bootctl.Record) error {
	_, err := r.change(func(rec bootctl.Record) (bootctl.Record, error) { return f(rec), nil })
	return err
}

// store is change for the update stager, which needs only the error.
func (r *records) store(f func(bootctl.Record) (bootctl.Record, error)) error {
	_, err := r.change(f)
	return err
}

// openedRecord is the boot-control record as the record phase leaves it.
type openedRecord struct {
	record *records
	// lastReset is why the previous boot ended, as recorded then.
	lastReset string
	// committed: the running slot is the good primary one, committed by an earlier boot.
	committed bool
}

// openRecord is the record phase: it opens the boot-control record, reports why the last boot
// ended, and records the unclean-reset sentinel that a clean end will overwrite.
func (g *Governor) openRecord(boot handoff.Handoff) (openedRecord, error) {
	dev, err := g.kernel.Record()
	if err != nil {
		return openedRecord{}, err
	}
	rec := &records{dev: dev}
	if err := rec.load(); err != nil {
		return openedRecord{}, err
	}
	r := rec.snapshot()
	if r.LastReset != "" {
		g.logf("last reset: %s", r.LastReset)
		g.emit(event.New(event.LastReset).With("reason", r.LastReset))
	}
	// A good primary slot was committed by an earlier boot: it takes updates from the start,
	// whatever its personas do, so an operator can always update out of it.
	committed := r.Slots[boot.Slot].State == bootctl.Good && r.Primary == boot.Slot
	if err := rec.set(func(r bootctl.Record) bootctl.Record { return bootctl.MarkReset(r, bootctl.UncleanReset) }); err != nil {
		return openedRecord{}, err
	}
	return openedRecord{record: rec, lastReset: r.LastReset, committed: committed}, nil
}
