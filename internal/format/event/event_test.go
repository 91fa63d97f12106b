package event

import (
	"errors"
	"strings"
	"testing"
)

func TestStringParseRoundTrip(t *testing.T) {
	for _, e := range []Event{
		New(Stage1Start),
		New(SlotUp).With("slot", "a").Uint("version", 1).With("name", "demo"),
		New(SlotFailed).With("slot", "b").With("reason", `verify: block 12 "bad" hash`),
		New(Halt).With("action", "reboot").With("reason", "panic: ünïcode\nand a newline"),
		New(PersonaStarted).With("name", "web").Int("pid", -1).With("empty", ""),
	} {
		line := e.String()
		if err := e.Valid(); err != nil {
			t.Errorf("%q: %v", line, err)
		}
		if strings.ContainsAny(line, "\n\r") {
			t.Errorf("%q spans lines", line)
		}
		got, err := Parse(line)
		if err != nil {
			t.Fatalf("Parse(%q): %v", line, err)
		}
		if got.String() != line || got.Kind != e.Kind || len(got.Attrs) != len(e.Attrs) {
			t.Errorf("Parse(%q) = %+v, want %+v", line, got, e)
		}
		for _, a := range e.Attrs {
			if v, ok := got.Get(a.Key); !ok || v != a.Value {
				t.Errorf("Parse(%q): %s = %q, want %q", line, a.Key, v, a.Value)
			}
		}
	}
}

func TestStringIsStable(t *testing.T) {
	got := New(SlotUp).With("slot", "a").Uint("version", 1).With("name", "demo").String()
	if want := "bay0: event=slot-up slot=a version=1 name=demo"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	got = New(Halt).With("reason", `a "b"`).String()
	if want := `bay0: event=halt reason="a \"b\""`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParseRefuses(t *testing.T) {
	for _, c := range []struct{ line, want string }{
		{"persona web: bay0: event=slot-up slot=a", "not an event"},
		{" bay0: event=slot-up", "not an event"},
		{"bay0: slot a committed", "not an event"},
		{"bay0: event=", "event kind"},
		{"bay0: event=Slot-up", "event kind"},
		{"bay0: event=slot--up", "event kind"},
		{"bay0: event=slot-up-", "event kind"},
		{"bay0: event=slot-up slot", "has no '='"},
		{"bay0: event=slot-up Slot=a", "attribute key"},
		{"bay0: event=slot-up slot=a slot=b", "given twice"},
		{"bay0: event=slot-up slot=", "must be quoted"},
		{"bay0: event=slot-up slot=a\tb", "must be quoted"},
		{"bay0: event=slot-up slot=\"a", "bad quoted value"},
		{"bay0: event=slot-up slot=\"a\"b=c", "one space"},
		{"bay0: event=slot-up slot=a ", "one space"},
		{"bay0: event=slot-up slot=a  name=b", "attribute key"},
		{"bay0: event=slot-up x=" + strings.Repeat("a", MaxLine), "at most"},
	} {
		_, err := Parse(c.line)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", c.line, err, c.want)
		}
	}
	if _, err := Parse("persona x: bay0: event=halt"); !errors.Is(err, ErrNotEvent) {
		t.Errorf("a persona's line: %v, want ErrNotEvent", err)
	}
}

func TestValidRefuses(t *testing.T) {
	for _, e := range []Event{
		New("Bad"),
		New(Halt).With("Reason", "x"),
		New(Halt).With("a", "x").With("a", "y"),
		New(Halt).With("a", strings.Repeat("\x00", MaxLine)),
	} {
		if err := e.Valid(); err == nil {
			t.Errorf("%+v is valid", e)
		}
	}
}

func TestMatches(t *testing.T) {
	e := New(SlotUp).With("slot", "a").Uint("version", 1)
	if !e.Matches(SlotUp) || !e.Matches(SlotUp, Attr{"slot", "a"}) || !e.Matches(SlotUp, Attr{"slot", "a"}, Attr{"version", "1"}) {
		t.Error("no match where one is due")
	}
	if e.Matches(Halt) || e.Matches(SlotUp, Attr{"slot", "b"}) || e.Matches(SlotUp, Attr{"name", ""}) {
		t.Error("a match where none is due")
	}
}

// FuzzParse: whatever a line holds, Parse never panics, and what it accepts prints back as a
// line that parses to the same event, on one line.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"bay0: event=slot-up slot=a version=1 name=demo",
		`bay0: event=halt action=reboot reason="panic: \u00fc\n"`,
		"bay0: event=stage1-start",
		"persona x: bay0: event=halt",
		`bay0: event=a b="\x00" c=d`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		e, err := Parse(line)
		if err != nil {
			return
		}
		if !strings.HasPrefix(line, Prefix) {
			t.Fatalf("accepted %q without the prefix", line)
		}
		if err := e.Valid(); err != nil {
			t.Fatalf("Parse(%q) gave an invalid event: %v", line, err)
		}
		out := e.String()
		if strings.ContainsAny(out, "\n\r") {
			t.Fatalf("%q printed over several lines: %q", line, out)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(String(Parse(%q))) = %v", line, err)
		}
		if again.String() != out {
			t.Fatalf("round trip of %q: %q then %q", line, out, again.String())
		}
	})
}
