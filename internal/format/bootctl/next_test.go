package bootctl

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func good(v uint64) Slot { return Slot{State: Good, Version: v, ImageSize: v << 20} }
func trial(tries uint8) Slot {
	return Slot{State: Trial, TriesLeft: tries, Version: 9, ImageSize: 9 << 20}
}
func bad(reason string) Slot { return Slot{State: Bad, Version: 5, Reason: reason} }

// up is s after Next chose to try it: one more boot without a clean end.
func up(s Slot) Slot { s.Resets++; return s }

// resets is a good slot that has been reset n times in a row, with limit (0: the default).
func resets(v uint64, n, limit uint8) Slot {
	s := good(v)
	s.Resets, s.ResetLimit = n, limit
	return s
}
func rec(primary int, a, b Slot) Record {
	return Record{Seq: 10, Primary: primary, MinVersion: 1, Slots: [NumSlots]Slot{a, b}, LastReset: "power button"}
}
func ok(s int) Outcome               { return Outcome{Slot: s, OK: true} }
func fail(s int, why string) Outcome { return Outcome{Slot: s, Reason: why} }

func TestNextNamed(t *testing.T) {
	long := strings.Repeat("é", ReasonSize) // 2*ReasonSize bytes
	for _, tc := range []struct {
		name    string
		rec     Record
		outs    []Outcome
		want    Action
		wantRec Record
	}{
		{"both good, try A first", rec(0, good(1), good(2)), nil,
			Action{Kind: Try, Slot: 0}, rec(0, up(good(1)), good(2))},
		{"primary B is tried first", rec(1, good(1), good(2)), nil,
			Action{Kind: Try, Slot: 1}, rec(1, good(1), up(good(2)))},
		{"A verified: boot A", rec(0, good(1), good(2)), []Outcome{ok(0)},
			Action{Kind: Boot, Slot: 0}, rec(0, good(1), good(2))},
		{"A failed: mark it bad, try B", rec(0, good(1), good(2)), []Outcome{fail(0, "root hash mismatch")},
			Action{Kind: Try, Slot: 1, Reasons: []string{"slot a: root hash mismatch"}},
			rec(0, Slot{State: Bad, Version: 1, ImageSize: 1 << 20, Reason: "root hash mismatch"}, up(good(2)))},
		{"A failed, B verified: boot B", rec(0, good(1), good(2)), []Outcome{fail(0, "bad signature"), ok(1)},
			Action{Kind: Boot, Slot: 1, Reasons: []string{"slot a: bad signature"}},
			rec(0, Slot{State: Bad, Version: 1, ImageSize: 1 << 20, Reason: "bad signature"}, good(2))},
		{"both failed: power off with both reasons", rec(0, good(1), good(2)), []Outcome{fail(0, "x"), fail(1, "y")},
			Action{Kind: PowerOff, Reasons: []string{"slot a: x", "slot b: y"}},
			rec(0, Slot{State: Bad, Version: 1, ImageSize: 1 << 20, Reason: "x"}, Slot{State: Bad, Version: 2, ImageSize: 2 << 20, Reason: "y"})},
		{"trial: use up a try before trying", rec(1, good(1), trial(1)), nil,
			Action{Kind: Try, Slot: 1}, rec(1, good(1), trial(0))},
		{"trial with two tries", rec(1, good(1), trial(2)), nil,
			Action{Kind: Try, Slot: 1}, rec(1, good(1), trial(1))},
		{"trial verified with its last try: boot it", rec(1, good(1), trial(0)), []Outcome{ok(1)},
			Action{Kind: Boot, Slot: 1}, rec(1, good(1), trial(0))},
		{"trial out of tries: bad, fall back to A", rec(1, good(1), trial(0)), nil,
			Action{Kind: Try, Slot: 0, Reasons: []string{"slot b: trial ran out of tries"}},
			rec(1, up(good(1)), Slot{State: Bad, Version: 9, ImageSize: 9 << 20, Reason: ReasonOutOfTries})},
		{"A bad, B empty: power off", rec(0, bad("old"), Slot{}), nil,
			Action{Kind: PowerOff, Reasons: []string{"slot a: bad: old", "slot b: empty"}}, rec(0, bad("old"), Slot{})},
		{"bad without a reason", rec(0, bad(""), good(2)), nil,
			Action{Kind: Try, Slot: 1, Reasons: []string{"slot a: bad"}}, rec(0, bad(""), up(good(2)))},
		{"both empty: power off", rec(0, Slot{}, Slot{}), nil,
			Action{Kind: PowerOff, Reasons: []string{"slot a: empty", "slot b: empty"}}, rec(0, Slot{}, Slot{})},
		{"A empty: try B", rec(0, Slot{}, good(2)), nil,
			Action{Kind: Try, Slot: 1, Reasons: []string{"slot a: empty"}}, rec(0, Slot{}, up(good(2)))},
		{"failure without a reason", rec(0, good(1), Slot{}), []Outcome{{Slot: 0}},
			Action{Kind: PowerOff, Reasons: []string{"slot a: failed", "slot b: empty"}},
			rec(0, Slot{State: Bad, Version: 1, ImageSize: 1 << 20, Reason: "failed"}, Slot{})},
		{"long reason is clipped in the record, whole on the console", rec(0, good(1), Slot{}), []Outcome{fail(0, long)},
			Action{Kind: PowerOff, Reasons: []string{"slot a: " + long, "slot b: empty"}},
			rec(0, Slot{State: Bad, Version: 1, ImageSize: 1 << 20, Reason: strings.Repeat("é", ReasonSize/2)}, Slot{})},
		{"only the first outcome of a slot counts", rec(0, good(1), good(2)), []Outcome{ok(0), fail(0, "late")},
			Action{Kind: Boot, Slot: 0}, rec(0, good(1), good(2))},
		{"outcomes of unknown slots are ignored", rec(0, good(1), good(2)), []Outcome{fail(2, "?"), fail(-1, "?")},
			Action{Kind: Try, Slot: 0}, rec(0, up(good(1)), good(2))},
		{"unknown state is passed over", rec(0, Slot{State: 7}, good(2)), nil,
			Action{Kind: Try, Slot: 1, Reasons: []string{"slot a: unknown state 7"}}, rec(0, Slot{State: 7}, up(good(2)))},
		{"bad primary means A", rec(5, good(1), good(2)), nil,
			Action{Kind: Try, Slot: 0}, rec(5, up(good(1)), good(2))},
		{"B failed earlier, A still tried first", rec(0, good(1), good(2)), []Outcome{fail(1, "z")},
			Action{Kind: Try, Slot: 0},
			rec(0, up(good(1)), Slot{State: Bad, Version: 2, ImageSize: 2 << 20, Reason: "z"})},
		{"good below its reset limit: counted and tried", rec(0, resets(1, 2, 0), good(2)), nil,
			Action{Kind: Try, Slot: 0}, rec(0, resets(1, 3, 0), good(2))},
		{"good at the default reset limit: bad, the other boots", rec(0, resets(1, DefaultResetLimit, 0), good(2)), nil,
			Action{Kind: Try, Slot: 1, Reasons: []string{"slot a: " + ReasonResetLoop + " (3)"}},
			rec(0, Slot{State: Bad, Version: 1, ImageSize: 1 << 20, Reason: ReasonResetLoop + " (3)"}, up(good(2)))},
		{"good at the record's reset limit of 1", rec(1, good(1), resets(2, 1, 1)), nil,
			Action{Kind: Try, Slot: 0, Reasons: []string{"slot b: " + ReasonResetLoop + " (1)"}},
			rec(1, up(good(1)), Slot{State: Bad, Version: 2, ImageSize: 2 << 20, Reason: ReasonResetLoop + " (1)"})},
		{"both at their reset limit: power off", rec(0, resets(1, 5, 5), resets(2, 3, 0)), nil,
			Action{Kind: PowerOff, Reasons: []string{"slot a: " + ReasonResetLoop + " (5)", "slot b: " + ReasonResetLoop + " (3)"}},
			rec(0, Slot{State: Bad, Version: 1, ImageSize: 1 << 20, Reason: ReasonResetLoop + " (5)"},
				Slot{State: Bad, Version: 2, ImageSize: 2 << 20, Reason: ReasonResetLoop + " (3)"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.rec
			outs := slices.Clone(tc.outs)
			act, got := Next(tc.rec, tc.outs)
			if act.Kind != tc.want.Kind || act.Slot != tc.want.Slot || !slices.Equal(act.Reasons, tc.want.Reasons) {
				t.Errorf("action = %v %d %q, want %v %d %q", act.Kind, act.Slot, act.Reasons, tc.want.Kind, tc.want.Slot, tc.want.Reasons)
			}
			if got != tc.wantRec {
				t.Errorf("record =\n%+v\nwant\n%+v", got, tc.wantRec)
			}
			if tc.rec != in || !slices.Equal(tc.outs, outs) {
				t.Error("Next changed its input")
			}
		})
	}
}

// slotCases are every state with tries 0, 1 and 2.
func slotCases() []Slot {
	var s []Slot
	for _, st := range []State{Empty, Trial, Good, Bad} {
		for tries := range uint8(3) {
			s = append(s, Slot{State: st, TriesLeft: tries, Version: uint64(st)*10 + uint64(tries), ImageSize: 1 << 20, Reason: "stored " + st.String()})
		}
	}
	return s
}

type tryResult int

const (
	untried tryResult = iota
	tryOK
	tryFail
)

// TestNextAllCombinations checks the boot law's invariants over every
// combination of slot states, tries, outcomes and primary.
func TestNextAllCombinations(t *testing.T) {
	n := 0
	for primary := range 2 {
		for _, a := range slotCases() {
			for _, b := range slotCases() {
				for ra := untried; ra <= tryFail; ra++ {
					for rb := untried; rb <= tryFail; rb++ {
						for _, reversed := range []bool{false, true} {
							r := rec(primary, a, b)
							outs := outcomesFor([NumSlots]tryResult{ra, rb}, reversed)
							name := fmt.Sprintf("primary=%s a=%v/%d:%v b=%v/%d:%v outs=%v", SlotName(primary), a.State, a.TriesLeft, ra, b.State, b.TriesLeft, rb, outs)
							checkNext(t, name, r, outs, [NumSlots]tryResult{ra, rb})
							n++
						}
					}
				}
			}
		}
	}
	t.Logf("%d combinations", n)
}

func outcomesFor(res [NumSlots]tryResult, reversed bool) []Outcome {
	var outs []Outcome
	for s := range NumSlots {
		switch res[s] {
		case tryOK:
			outs = append(outs, ok(s))
		case tryFail:
			outs = append(outs, fail(s, "verify slot "+SlotName(s)+": broken"))
		}
	}
	if reversed {
		slices.Reverse(outs)
	}
	return outs
}

// bootOrder is the boot law spelled out for the test, not computed by the code under test.
func bootOrder(primary int) [NumSlots]int {
	if primary == 1 {
		return [NumSlots]int{1, 0} // B -> A -> poweroff
	}
	return [NumSlots]int{0, 1} // A -> B -> poweroff
}

func bootable(s Slot, r tryResult) bool {
	switch r {
	case tryOK:
		return true
	case tryFail:
		return false
	}
	return s.State == Good || s.State == Trial && s.TriesLeft > 0
}

func checkNext(t *testing.T, name string, in Record, outs []Outcome, res [NumSlots]tryResult) {
	t.Helper()
	act, out := Next(in, outs)
	fatal := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s: %s\naction %+v\nrecord %+v", name, fmt.Sprintf(format, args...), act, out)
	}
	order := bootOrder(in.Primary)

	// The decision: the first bootable candidate, else power off.
	first := -1
	for _, s := range order {
		if bootable(in.Slots[s], res[s]) {
			first = s
			break
		}
	}
	switch {
	case first < 0:
		if act.Kind != PowerOff {
			fatal("nothing is bootable but the action is %v", act.Kind)
		}
	case act.Kind == PowerOff:
		fatal("slot %s is bootable but the action is poweroff", SlotName(first))
	case act.Slot != first:
		fatal("chose slot %s, want %s (primary first)", SlotName(act.Slot), SlotName(first))
	case act.Kind == Boot && res[first] != tryOK:
		fatal("booted a slot that did not verify this boot")
	case act.Kind == Try && res[first] != untried:
		fatal("tried slot %s twice", SlotName(first))
	case act.Kind == Try && in.Slots[first].State != Good && in.Slots[first].State != Trial:
		fatal("tried a %v slot", in.Slots[first].State)
	case act.Kind != Try && act.Kind != Boot:
		fatal("unknown action %v", act.Kind)
	}

	// The record: only what the law says changes.
	if out.Seq != in.Seq || out.Primary != in.Primary || out.MinVersion != in.MinVersion || out.LastReset != in.LastReset {
		fatal("record header changed")
	}
	decided := len(order) // candidates before this index were walked past
	if first >= 0 {
		decided = slices.Index(order[:], first)
	}
	for i, s := range order {
		before, after := in.Slots[s], out.Slots[s]
		if after.Version != before.Version || after.ImageSize != before.ImageSize {
			fatal("slot %s version or size changed", SlotName(s))
		}
		want := before
		switch {
		case res[s] == tryFail:
			want = Slot{State: Bad, Version: before.Version, ImageSize: before.ImageSize, Reason: "verify slot " + SlotName(s) + ": broken"}
		case act.Kind == Try && act.Slot == s && before.State == Trial:
			want.TriesLeft-- // exactly once per try
		case act.Kind == Try && act.Slot == s && before.State == Good:
			want.Resets++ // counted before the try, cleared only by a clean end
		case i < decided && res[s] == untried && before.State == Trial && before.TriesLeft == 0:
			want = Slot{State: Bad, Version: before.Version, ImageSize: before.ImageSize, Reason: ReasonOutOfTries}
		}
		if after != want {
			fatal("slot %s = %+v, want %+v", SlotName(s), after, want)
		}
	}

	// The reasons: one per slot passed over, in candidate order; all of them on poweroff.
	if len(act.Reasons) != decided {
		fatal("%d reasons, want %d", len(act.Reasons), decided)
	}
	for i, reason := range act.Reasons {
		s := order[i]
		if !strings.HasPrefix(reason, "slot "+SlotName(s)+": ") {
			fatal("reason %d %q does not name slot %s", i, reason, SlotName(s))
		}
		if res[s] == tryFail && !strings.HasSuffix(reason, ": broken") {
			fatal("reason %q lost the failure", reason)
		}
	}

	// Deciding again on what was stored changes nothing more, unless a try is pending.
	if act.Kind != Try {
		act2, out2 := Next(out, outs)
		if act2.Kind != act.Kind || act2.Slot != act.Slot || out2 != out {
			fatal("not stable: again %+v %+v", act2, out2)
		}
	}
}

// world says what happens when a slot is tried: it verifies, fails, or the
// machine hangs (the watchdog resets it) before any outcome is known.
type world [NumSlots]string

// bootOnce runs bay0's loop for one boot against a device, as cmd/bay0 does.
func bootOnce(t *testing.T, dev *memDev, w world) (Action, []int) {
	t.Helper()
	r, cp, err := Load(dev)
	if err != nil {
		t.Fatal(err)
	}
	var outs []Outcome
	var tried []int
	for range 2*NumSlots + 1 {
		act, next := Next(r, outs)
		if next != r {
			if r, cp, err = Store(dev, r, cp, next); err != nil {
				t.Fatal(err)
			}
		}
		switch act.Kind {
		case Try:
			tried = append(tried, act.Slot)
			switch w[act.Slot] {
			case "ok":
				outs = append(outs, ok(act.Slot))
			case "fail":
				outs = append(outs, fail(act.Slot, "verify: broken"))
			case "hang":
				return act, tried
			default:
				t.Fatalf("bad world %q", w[act.Slot])
			}
		case Boot, PowerOff:
			if disk, _, err := Load(dev); err != nil || disk != r {
				t.Fatalf("record on disk %+v, %v; loop has %+v", disk, err, r)
			}
			return act, tried
		}
	}
	t.Fatal("boot loop did not end")
	return Action{}, nil
}

// TestBootLoop runs whole boots over every record and every world where a
// slot verifies or fails, through Store and Load.
func TestBootLoop(t *testing.T) {
	for primary := range 2 {
		for _, a := range slotCases() {
			for _, b := range slotCases() {
				for _, w := range []world{{"ok", "ok"}, {"ok", "fail"}, {"fail", "ok"}, {"fail", "fail"}} {
					dev := newDev()
					if _, _, err := Store(dev, Record{}, 1, rec(primary, a, b)); err != nil {
						t.Fatal(err)
					}
					act, tried := bootOnce(t, dev, w)
					name := fmt.Sprintf("primary %s, a %+v, b %+v, world %v", SlotName(primary), a, b, w)
					order := bootOrder(primary)
					if len(tried) > NumSlots || len(tried) == 2 && tried[0] == tried[1] {
						t.Fatalf("%s: tried %v", name, tried)
					}
					for i := 1; i < len(tried); i++ {
						if slices.Index(order[:], tried[i]) < slices.Index(order[:], tried[i-1]) {
							t.Fatalf("%s: tried %v, not in candidate order", name, tried)
						}
					}
					switch act.Kind {
					case Boot:
						if len(tried) == 0 || tried[len(tried)-1] != act.Slot || w[act.Slot] != "ok" {
							t.Fatalf("%s: booted %d after trying %v", name, act.Slot, tried)
						}
					case PowerOff:
						for _, s := range tried {
							if w[s] == "ok" {
								t.Fatalf("%s: powered off though slot %d verified", name, s)
							}
						}
						if len(act.Reasons) != NumSlots {
							t.Fatalf("%s: reasons %q", name, act.Reasons)
						}
					default:
						t.Fatalf("%s: boot ended with %v", name, act.Kind)
					}
				}
			}
		}
	}
}

// TestTrialThatHangsFallsBack is the update path gone wrong: the new Spine in
// B hangs the machine before the governor can commit it. Its one try is used
// up before it runs, so the next boot comes back on A by itself.
func TestTrialThatHangsFallsBack(t *testing.T) {
	dev := newDev()
	if _, _, err := Store(dev, Record{}, 1, rec(1, good(1), trial(1))); err != nil {
		t.Fatal(err)
	}
	w := world{"ok", "hang"}
	act, tried := bootOnce(t, dev, w)
	if act.Kind != Try || !slices.Equal(tried, []int{1}) {
		t.Fatalf("boot 1: %+v after %v, want a hang while trying B", act, tried)
	}
	act, tried = bootOnce(t, dev, w)
	if act.Kind != Boot || act.Slot != 0 || !slices.Equal(tried, []int{0}) {
		t.Fatalf("boot 2: %+v after %v, want boot A without trying B", act, tried)
	}
	r, _, err := Load(dev)
	if err != nil {
		t.Fatal(err)
	}
	if r.Slots[1].State != Bad || r.Slots[1].Reason != ReasonOutOfTries || r.Slots[0] != up(good(1)) {
		t.Errorf("record after fallback: %+v", r)
	}
	// And it stays that way: every later boot goes straight to A.
	if act, tried = bootOnce(t, dev, w); act.Kind != Boot || act.Slot != 0 || !slices.Equal(tried, []int{0}) {
		t.Errorf("boot 3: %+v after %v", act, tried)
	}
}

// TestTrialWithTwoTries hangs twice, then falls back on the third boot.
func TestTrialWithTwoTries(t *testing.T) {
	dev := newDev()
	if _, _, err := Store(dev, Record{}, 1, rec(0, trial(2), good(1))); err != nil {
		t.Fatal(err)
	}
	w := world{"hang", "ok"}
	for boot, want := range []Action{{Kind: Try, Slot: 0}, {Kind: Try, Slot: 0}, {Kind: Boot, Slot: 1}} {
		act, _ := bootOnce(t, dev, w)
		if act.Kind != want.Kind || act.Slot != want.Slot {
			t.Fatalf("boot %d: %v %d, want %v %d", boot+1, act.Kind, act.Slot, want.Kind, want.Slot)
		}
	}
}
