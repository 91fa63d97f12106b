package governor

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"testing"
)

type rw struct{ bytes.Buffer }

func (r *rw) Read([]byte) (int, error) { return 0, io.EOF }

// TestBayLinesSurvivePersonaFlood: a persona's flood fills its own ring, never bay0's, so
// bay0's own lines stay in spine ctl logs.
func TestBayLinesSurvivePersonaFlood(t *testing.T) {
	g := New(&rw{})
	g.logf("slot a committed")
	out := io.MultiWriter(g.con.Source("persona web", 0), g.personaRing)
	for i := range 10000 {
		fmt.Fprintf(out, "persona web: flood %d\n", i)
	}
	lines, err := (&ctlHandler{g: g}).Logs()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(lines, "bay0: slot a committed") {
		t.Errorf("bay0's line was pushed out of the logs by a persona's flood (%d lines)", len(lines))
	}
	if !slices.Contains(lines, "persona web: flood 9999") {
		t.Error("the persona's latest line is missing")
	}
}
