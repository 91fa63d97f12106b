package governor

import (
	"fmt"
	"sync"

	"alpinespine.org/spine/internal/format/bootctl"
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
