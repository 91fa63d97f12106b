package update

import (
	"errors"
	"testing"

	"alpinespine.org/spine/internal/format/bootctl"
)

func TestTarget(t *testing.T) {
	good := bootctl.Slot{State: bootctl.Good, Version: 1}
	cases := []struct {
		name    string
		rec     bootctl.Record
		running int
		want    int
		refused bool
	}{
		{"committed a writes b", bootctl.Record{Primary: 0, Slots: [2]bootctl.Slot{good, good}}, 0, 1, false},
		{"committed b writes a", bootctl.Record{Primary: 1, Slots: [2]bootctl.Slot{{State: bootctl.Bad}, good}}, 1, 0, false},
		{"trial in progress", bootctl.Record{Primary: 0, Slots: [2]bootctl.Slot{{State: bootctl.Trial}, good}}, 0, 0, true},
		{"fallback not committed", bootctl.Record{Primary: 0, Slots: [2]bootctl.Slot{{State: bootctl.Bad}, good}}, 1, 0, true},
		{"bogus slot", bootctl.Record{}, 2, 0, true},
	}
	for _, c := range cases {
		got, err := Target(c.rec, c.running)
		if c.refused != (err != nil) || (err != nil && !errors.Is(err, ErrRefused)) || (!c.refused && got != c.want) {
			t.Errorf("%s: Target = %d, %v", c.name, got, err)
		}
	}
}
