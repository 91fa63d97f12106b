package conformance

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/host/testreport"
)

const events = `{"Action":"output","Package":"alpinespine.org/spine/e2e","Test":"TestOK","Output":"figure: boot=3s\n"}
{"Action":"pass","Package":"alpinespine.org/spine/e2e","Test":"TestOK","Elapsed":1}
{"Action":"fail","Package":"alpinespine.org/spine/e2e","Test":"TestBad","Elapsed":1}
`

const clauses = `constitution = "0.1"
[[clause]]
id = "A"
article = "I"
text = "proved"
tests = ["e2e.TestOK"]
[[clause]]
id = "B"
text = "unproved"
note = "needs hardware"
[[clause]]
id = "C"
text = "broken"
tests = ["e2e.TestBad"]
[[clause]]
id = "D"
text = "renamed test"
tests = ["e2e.TestGone"]
`

func TestEvaluate(t *testing.T) {
	m, err := Load(strings.NewReader(clauses))
	if err != nil {
		t.Fatal(err)
	}
	rep := testreport.New()
	if err := rep.Read(strings.NewReader(events), nil); err != nil {
		t.Fatal(err)
	}
	rows := Evaluate(m, rep)
	want := []Status{Pass, Gap, Fail, NotRun}
	for i, r := range rows {
		if r.Status != want[i] {
			t.Errorf("clause %s: %s, want %s", r.Clause.ID, r.Status, want[i])
		}
	}
	if err := Check(rows); !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "C") || !strings.Contains(err.Error(), "D") {
		t.Errorf("Check: %v", err)
	}
	var b bytes.Buffer
	if err := Render(&b, m, rows, "test"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"| A | I | proved | pass | `e2e.TestOK` (pass) | boot=3s |", "**gap**", "_needs hardware_", "1 pass, 1 gap, 1 fail, 1 not run"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, b.String())
		}
	}
}

func TestLoadRejects(t *testing.T) {
	for _, bad := range []string{"[[clause]]\nid = \"x\"\n", "[[clause]]\nid=\"a\"\ntext=\"t\"\n[[clause]]\nid=\"a\"\ntext=\"t\"\n", "bogus = 1\n"} {
		if _, err := Load(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// TestClauseMapLoads keeps the real map parseable.
func TestClauseMapLoads(t *testing.T) {
	f, err := os.Open("../../../conformance/clauses.toml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Clauses) < 40 {
		t.Fatalf("the map has %d clauses; the constitution has more", len(m.Clauses))
	}
}
