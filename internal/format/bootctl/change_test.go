package bootctl

import (
	"errors"
	"strings"
	"testing"
)

func TestCommit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      Record
		slot    int
		version uint64
		limit   uint8
		want    Record
		err     bool
	}{
		{"trial b commits; floor rises to the good a", rec(1, good(1), trial(0)), 1, 9, 2,
			Record{Seq: 10, Primary: 1, MinVersion: 1, Slots: [2]Slot{good(1), {State: Good, Version: 9, ImageSize: 9 << 20, ResetLimit: 2}}, LastReset: "power button"}, false},
		{"other slot bad: floor rises to this version", rec(1, bad("x"), trial(0)), 1, 9, 0,
			Record{Seq: 10, Primary: 1, MinVersion: 9, Slots: [2]Slot{bad("x"), {State: Good, Version: 9, ImageSize: 9 << 20}}, LastReset: "power button"}, false},
		{"fallback commit clears its resets and becomes primary", rec(1, resets(3, 2, 0), bad("x")), 0, 3, 0,
			Record{Seq: 10, Primary: 0, MinVersion: 3, Slots: [2]Slot{good(3), bad("x")}, LastReset: "power button"}, false},
		{"floor never drops", Record{MinVersion: 7, Slots: [2]Slot{good(7), good(8)}}, 1, 8, 0,
			Record{Primary: 1, MinVersion: 7, Slots: [2]Slot{good(7), good(8)}}, false},
		{"other good below the floor does not lower it", Record{MinVersion: 7, Slots: [2]Slot{good(3), good(8)}}, 1, 8, 0,
			Record{Primary: 1, MinVersion: 8, Slots: [2]Slot{good(3), good(8)}}, false},
		{"below the floor: refused", Record{MinVersion: 7, Slots: [2]Slot{good(7), good(5)}}, 1, 5, 0, Record{}, true},
		{"no such slot", rec(0, good(1), good(2)), 2, 1, 0, Record{}, true},
	} {
		got, err := Commit(tc.in, tc.slot, tc.version, tc.limit)
		if tc.err {
			if !errors.Is(err, ErrChange) || got != tc.in {
				t.Errorf("%s: Commit = %+v, %v; want the record unchanged and ErrChange", tc.name, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: Commit =\n%+v, %v\nwant\n%+v", tc.name, got, err, tc.want)
		}
	}
}

func TestUpdateChanges(t *testing.T) {
	r := rec(0, good(1), good(0))
	r, err := BeginUpdate(r, 1)
	if err != nil || r.Slots[1].State != Empty || r.Primary != 0 || r.Slots[0] != good(1) {
		t.Fatalf("BeginUpdate = %+v, %v", r, err)
	}
	r, err = FinishUpdate(r, 1, 2, 4096)
	if err != nil || r.Slots[1] != (Slot{State: Trial, TriesLeft: TrialTries, Version: 2, ImageSize: 4096}) || r.Primary != 1 || r.Slots[0] != good(1) {
		t.Fatalf("FinishUpdate = %+v, %v; the running slot must stay good, the last-known-good", r, err)
	}
	begun, _ := BeginUpdate(rec(0, good(3), good(2)), 1)
	if r, err := RestoreSlot(begun, 1, 3, 8192); err != nil || r.Slots[1] != (Slot{State: Good, Version: 3, ImageSize: 8192}) || r.Primary != 0 || r.Slots[0] != good(3) {
		t.Fatalf("RestoreSlot = %+v, %v", r, err)
	}
	for _, bad := range []func() (Record, error){
		func() (Record, error) { return RestoreSlot(rec(0, good(1), Slot{}), 0, 1, 1) },         // the primary
		func() (Record, error) { return BeginUpdate(rec(0, good(1), good(2)), 0) },              // the primary
		func() (Record, error) { return BeginUpdate(rec(0, good(1), good(2)), -1) },             // no such slot
		func() (Record, error) { return FinishUpdate(rec(0, good(1), Slot{}), 1, 0, 1) },        // below min_version 1
		func() (Record, error) { return FinishUpdate(rec(1, trial(1), Slot{}), 1, 9, 1) },       // a is in trial
		func() (Record, error) { return FinishUpdate(rec(0, good(1), Slot{}), NumSlots, 9, 1) }, // no such slot
	} {
		if _, err := bad(); !errors.Is(err, ErrChange) {
			t.Errorf("a refused change gave %v, want ErrChange", err)
		}
	}
}

func TestResetChanges(t *testing.T) {
	r := rec(0, resets(1, 2, 0), good(2))
	if got := MarkReset(r, strings.Repeat("x", 2*LastResetSize)); len(got.LastReset) != LastResetSize || got.Slots != r.Slots {
		t.Errorf("MarkReset did not clip or touched the slots: %d bytes", len(got.LastReset))
	}
	got := CleanEnd(r, 0, "reboot: operator asked")
	if got.Slots[0].Resets != 0 || got.LastReset != "reboot: operator asked" || got.Slots[1] != r.Slots[1] {
		t.Errorf("CleanEnd = %+v", got)
	}
	if got := CleanEnd(r, 7, "x"); got.Slots != r.Slots {
		t.Error("CleanEnd of no slot changed a slot")
	}

	unclean := MarkReset(r, UncleanReset)
	got = ExplainReset(unclean, []Outcome{fail(0, "eager verification: block 9")})
	if !strings.Contains(got.LastReset, "slot a damaged") || !strings.Contains(got.LastReset, "block 9") {
		t.Errorf("ExplainReset = %q", got.LastReset)
	}
	if got := ExplainReset(unclean, []Outcome{ok(0)}); got != unclean {
		t.Error("ExplainReset changed a record whose slot verified")
	}
	if got := ExplainReset(r, []Outcome{fail(0, "x")}); got != r {
		t.Error("ExplainReset changed a record that has a reason already")
	}
}

func TestMarkFailed(t *testing.T) {
	r := rec(0, resets(1, 2, 0), good(2))
	got := MarkFailed(r, 1, "under its own kernel: no dm-verity")
	if got.Slots[1].State != Bad || got.Slots[1].Reason != "under its own kernel: no dm-verity" || got.Slots[0] != r.Slots[0] {
		t.Errorf("MarkFailed = %+v", got)
	}
	if err := got.Check(); err != nil {
		t.Errorf("MarkFailed broke the record: %v", err)
	}
	if got := MarkFailed(r, 2, "x"); got != r {
		t.Error("MarkFailed of no slot changed the record")
	}
}

// FuzzChanges applies any sequence of changes, the boot decision included, to any valid
// record and checks the invariants after each: min_version never drops; at most one slot is
// in trial and it is at or above the floor; a good slot at or above the floor stays good and
// bootable unless the change was aimed at it (an update into it, or its own failure, reset
// loop or bad verification in Next).
func FuzzChanges(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13})
	f.Add([]byte{2, 1, 9, 3, 1, 0, 0, 5, 6, 0, 6, 0, 6, 0, 6})
	f.Add([]byte{2, 1, 9, 7, 0, 6, 0, 7, 1, 6, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		r := Record{Primary: 0, MinVersion: 1, Slots: [2]Slot{good(1), good(1)}}
		next := func() byte {
			if len(ops) == 0 {
				return 0
			}
			b := ops[0]
			ops = ops[1:]
			return b
		}
		for len(ops) > 0 {
			before := r
			op, arg := next()%8, next()
			slot := int(arg % 3) // 2 is no slot at all
			var aimed [NumSlots]bool
			var err error
			switch op {
			case 0:
				r, err = Commit(r, slot, uint64(next()%16), next()%4)
			case 1:
				r, err = BeginUpdate(r, slot)
				if slot < NumSlots {
					aimed[slot] = true
				}
			case 2:
				r, err = FinishUpdate(r, slot, uint64(next()%16), 1)
				if slot < NumSlots {
					aimed[slot] = true
				}
			case 3:
				r = MarkReset(r, string(ops))
			case 4:
				r = CleanEnd(r, slot, "clean")
			case 5:
				outs := []Outcome{{Slot: slot, OK: arg&4 != 0, Reason: "x"}}
				r = ExplainReset(r, outs)
				_, r = Next(r, outs)
				aimed = [NumSlots]bool{true, true} // failures and reset loops are Next's to decide
			case 6:
				_, r = Next(r, nil)
				aimed = [NumSlots]bool{true, true}
			case 7:
				r = MarkFailed(r, slot, "under its own kernel: x")
				if slot < NumSlots {
					aimed[slot] = true
				}
			}
			if err != nil {
				if !errors.Is(err, ErrChange) || r != before {
					t.Fatalf("op %d: a refused change must leave the record alone: %v", op, err)
				}
				continue
			}
			if r.MinVersion < before.MinVersion {
				t.Fatalf("op %d: min_version dropped from %d to %d", op, before.MinVersion, r.MinVersion)
			}
			if err := r.Check(); err != nil {
				t.Fatalf("op %d: %v\nbefore %+v\nafter  %+v", op, err, before, r)
			}
			for s := range NumSlots {
				b, a := before.Slots[s], r.Slots[s]
				if b.State == Good && b.Version >= before.MinVersion && !aimed[s] &&
					(a.State != Good || a.Version < r.MinVersion) {
					t.Fatalf("op %d: good slot %s became unbootable: %+v -> %+v (min_version %d)", op, SlotName(s), b, a, r.MinVersion)
				}
			}
		}
	})
}
