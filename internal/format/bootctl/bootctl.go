// Package bootctl holds the boot-control record and the boot decision of the
// boot law "A -> B -> poweroff".
//
// The record lives in the bay0-state partition in two copies of RecordSize
// bytes each; the newest valid copy wins and a write goes to the other one,
// so a power cut during a write leaves the previous record in place (Load,
// Store). Next is the pure decision: given the record and what was tried
// during this boot, it says which slot to try, boot, or that the machine
// must power off, and how the record changes. The package makes no system
// calls: the device is passed in.
package bootctl

import "fmt"

// State is the state of a slot.
type State uint8

// Slot states, as stored on disk.
const (
	// Empty: no Spine was ever written to the slot.
	Empty State = 0
	// Trial: a new Spine that has TriesLeft boots left to prove itself.
	Trial State = 1
	// Good: a Spine that was healthy for the governor's commit window.
	Good State = 2
	// Bad: a Spine that failed; never tried again until it is rewritten.
	Bad State = 3
)

func (s State) String() string {
	switch s {
	case Empty:
		return "empty"
	case Trial:
		return "trial"
	case Good:
		return "good"
	case Bad:
		return "bad"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// NumSlots is the number of Spine slots: A and B.
const NumSlots = 2

// SlotName returns "a" for slot 0 and "b" for slot 1, the suffix of the
// partition names spine-a and spine-b.
func SlotName(i int) string {
	switch i {
	case 0:
		return "a"
	case 1:
		return "b"
	}
	return fmt.Sprintf("slot(%d)", i)
}

// Slot is what the record says about one Spine slot.
type Slot struct {
	// State is the slot's state.
	State State
	// TriesLeft counts the boots a Trial slot may still be tried.
	TriesLeft uint8
	// Resets counts the boots of a Good slot since its last clean end (a power off, or a
	// reboot someone asked for): every boot that ends any other way (a watchdog reset, a
	// panic, a containment failure, a power cut) leaves it raised.
	Resets uint8
	// ResetLimit is how many such boots in a row a Good slot gets before it is marked Bad
	// and the other slot boots; 0 means DefaultResetLimit. The governor sets it from the
	// policy when it commits the slot.
	ResetLimit uint8
	// Version is the Spine version written to the slot.
	Version uint64
	// ImageSize is the size in bytes of the Spine image in the slot.
	ImageSize uint64
	// Reason says why the slot is Bad (at most ReasonSize bytes of UTF-8).
	Reason string
}

// Record is the boot-control record. It is boot state, not configuration.
type Record struct {
	// Seq orders the two copies on disk: the valid copy with the larger Seq wins.
	Seq uint64
	// Primary is the slot tried first: 0 for A, 1 for B.
	Primary int
	// MinVersion is the lowest Spine version that may boot (anti-rollback).
	MinVersion uint64
	// Slots are slots A and B.
	Slots [NumSlots]Slot
	// LastReset says why the machine last went down (at most LastResetSize bytes of UTF-8).
	LastReset string
}

// SlotInit describes a Spine written to a slot when the disk is made.
type SlotInit struct {
	// Version is the Spine version.
	Version uint64
	// ImageSize is the size of the image in bytes.
	ImageSize uint64
}

// Initial returns the record of a new disk: primary A, MinVersion 0, a slot
// given a SlotInit is Good with no tries, a nil one is Empty. Seq is 0: write
// it with Store(dev, Record{}, 1, Initial(a, b)) so that it lands in copy 0
// with Seq 1.
func Initial(a, b *SlotInit) Record {
	var r Record
	for i, s := range []*SlotInit{a, b} {
		if s != nil {
			r.Slots[i] = Slot{State: Good, Version: s.Version, ImageSize: s.ImageSize}
		}
	}
	return r
}
