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
[[clause]]
id = "E"
text = "only a stand-in"
tests = ["e2e.TestOK"]
indirect = ["e2e.TestOK"]
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
	want := []Status{Pass, Gap, Fail, NotRun, Partial}
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
	for _, s := range []string{"| A | I | proved | pass | e2e `e2e.TestOK` (pass) | boot=3s |", "**gap**", "_needs hardware_",
		"**5 clauses: 1 pass, 1 partial, 1 gap, 1 fail, 1 not run.**", "| E |  | only a stand-in | **partial** | indirect `e2e.TestOK` (pass)<br>_no e2e proof_ | boot=3s |"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, b.String())
		}
	}
}

func TestLoadRejects(t *testing.T) {
	for _, bad := range []string{"[[clause]]\nid = \"x\"\n", "[[clause]]\nid=\"a\"\ntext=\"t\"\ntests=[\"e2e.A\"]\nindirect=[\"e2e.B\"]\n", "[[clause]]\nid=\"a\"\ntext=\"t\"\n[[clause]]\nid=\"a\"\ntext=\"t\"\n", "bogus = 1\n"} {
		if _, err := Load(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

const law = `Alpine Spine / bay0 — Constitutional Law

Status: v0.7 (Frozen)

PREAMBLE

This document defines what must never change.

ARTICLE I — THE SPINE

§2. Invariants

The Spine MUST:

1. Be immutable at runtime


2. Be mounted read-only


The Spine MUST NOT:

Accept runtime modification

§3. Enforcement

Immutability is enforced by:

SquashFS

Violation results in halt or reboot, not repair.

ARTICLE II — BAY0

§3. Failure Semantics

If bay0:

Crashes

Then the system MUST reboot.

There is no degraded mode.

ARTICLE IX — AMENDMENTS

§1. Amendment Rule

This Constitution MAY ONLY be amended by:

Full replacement

§2. Forbidden Amendments

The following MAY NEVER be amended away:

Spine immutability
`

// TestParseConstitution: versions, list items under a binding lead, sentences that bind on their
// own; not the preamble, not lists under a lead that binds nobody, not the amendment procedure.
func TestParseConstitution(t *testing.T) {
	c, err := ParseConstitution(strings.NewReader(law))
	if err != nil {
		t.Fatal(err)
	}
	if c.Version != "0.7" {
		t.Errorf("version %q", c.Version)
	}
	var got []string
	for _, r := range c.Requirements {
		got = append(got, r.String())
	}
	want := []string{
		"I §2: The Spine MUST Be immutable at runtime",
		"I §2: The Spine MUST Be mounted read-only",
		"I §2: The Spine MUST NOT Accept runtime modification",
		"I §3: Violation results in halt or reboot, not repair.",
		"II §3: Then the system MUST reboot.",
		"II §3: There is no degraded mode.",
		"IX §2: The following MAY NEVER be amended away Spine immutability",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requirements:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, bad := range []string{"", "Status: v1\n", "ARTICLE I\n§1. x\nThe Spine MUST be.\n"} {
		if _, err := ParseConstitution(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// TestCover: a requirement without a row, a quote the law does not say, and a version that
// differs each fail the check.
func TestCover(t *testing.T) {
	c, err := ParseConstitution(strings.NewReader(law))
	if err != nil {
		t.Fatal(err)
	}
	full := Map{Constitution: "0.7", Clauses: []Clause{
		{ID: "1", Article: "I §2", Quotes: []string{"Be immutable at runtime", "Be mounted read-only", "Accept runtime modification"}},
		{ID: "2", Article: "I §3", Quotes: []string{"Violation results in halt or reboot, not repair."}},
		{ID: "3", Article: "II §3", Quotes: []string{"Then the system MUST reboot.", "There is no degraded mode."}},
		{ID: "4", Article: "IX §2", Quotes: []string{"Spine immutability"}},
	}}
	if err := Cover(full, c); err != nil {
		t.Fatalf("Cover of a full map: %v", err)
	}
	missing := full
	missing.Clauses = full.Clauses[1:]
	stale := Map{Constitution: "0.7", Clauses: append([]Clause{{ID: "5", Article: "II §3", Quotes: []string{"Be immutable at runtime"}}}, full.Clauses...)}
	old := full
	old.Constitution = "0.1"
	for name, m := range map[string]Map{"missing row": missing, "stale quote": stale, "old version": old} {
		if err := Cover(m, c); !errors.Is(err, ErrUncovered) {
			t.Errorf("%s: Cover = %v", name, err)
		}
	}
}

// TestClauseMapCoversConstitution: the real map covers the real constitution, read from
// ../shared/CONSTITUTION.md beside the project (as CI lays it out).
func TestClauseMapCoversConstitution(t *testing.T) {
	f, err := os.Open("../../../conformance/clauses.toml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	law, err := os.Open("../../../../shared/CONSTITUTION.md")
	if err != nil {
		t.Fatalf("the constitution must lie beside the project as ../shared/CONSTITUTION.md: %v", err)
	}
	defer law.Close()
	c, err := ParseConstitution(law)
	if err != nil {
		t.Fatal(err)
	}
	if err := Cover(m, c); err != nil {
		t.Fatal(err)
	}
	t.Logf("constitution v%s: %d binding items, %d rows", c.Version, len(c.Requirements), len(m.Clauses))
}
