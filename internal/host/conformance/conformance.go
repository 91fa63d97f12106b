// Package conformance maps every clause of the constitution to the tests that prove it and
// renders the result of a test run as CONFORMANCE.md. The map is checked against the
// constitution's own text, so a clause with no row fails the report. Every proof is graded: a
// clause passes only with at least one e2e proof (a real boot that asserts the property on the
// machine's state); with only unit or indirect proofs it is partial; with none, a gap.
package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"alpinespine.org/spine/internal/host/testreport"
	"alpinespine.org/spine/internal/host/tomlconf"
)

// Clause is one MUST, MUST NOT or guarantee of the constitution.
type Clause struct {
	ID      string   `toml:"id"`
	Article string   `toml:"article"`
	Text    string   `toml:"text"`
	Tests   []string `toml:"tests"`
	// Quotes are the constitution's own words that this row proves, exactly as written there
	// (a list item, or a sentence that stands alone), all from Article.
	Quotes []string `toml:"quotes"`
	// Indirect names tests of Tests that bear on the clause without asserting it on the
	// machine's state (a stand-in, an inference); they never make a clause pass.
	Indirect []string `toml:"indirect"`
	// Note explains a gap or a partial proof, or how the tests prove the clause when that is
	// not obvious.
	Note string `toml:"note"`
}

// Grade is how strongly a test proves its clause.
type Grade string

// The grades, strongest first.
const (
	// GradeE2E is a real boot under QEMU that asserts the property and fails if it breaks.
	GradeE2E Grade = "e2e"
	// GradeUnit is a test on the build host: real code, but not the machine.
	GradeUnit Grade = "unit"
	// GradeIndirect bears on the clause without asserting it.
	GradeIndirect Grade = "indirect"
)

// GradeOf grades one of the clause's tests.
func (c Clause) GradeOf(test string) Grade {
	for _, t := range c.Indirect {
		if t == test {
			return GradeIndirect
		}
	}
	if strings.HasPrefix(test, "e2e.") {
		return GradeE2E
	}
	return GradeUnit
}

// Map is the whole clause list, kept as data in conformance/clauses.toml.
type Map struct {
	Constitution string   `toml:"constitution"`
	Clauses      []Clause `toml:"clause"`
}

// Load reads the map strictly.
func Load(r io.Reader) (Map, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return Map{}, fmt.Errorf("read clause map: %w", err)
	}
	var m Map
	if err := tomlconf.DecodeStrict(data, &m); err != nil {
		return Map{}, fmt.Errorf("clause map: %w", err)
	}
	seen := map[string]bool{}
	for _, c := range m.Clauses {
		if c.ID == "" || c.Text == "" {
			return Map{}, fmt.Errorf("clause map: a clause lacks id or text (%q)", c.ID)
		}
		if seen[c.ID] {
			return Map{}, fmt.Errorf("clause map: clause %s appears twice", c.ID)
		}
		seen[c.ID] = true
		for _, t := range c.Indirect {
			if !contains(c.Tests, t) {
				return Map{}, fmt.Errorf("clause map: clause %s: indirect test %s is not one of its tests", c.ID, t)
			}
		}
	}
	return m, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Cover checks the map against the constitution's text: every binding item has a row that
// quotes it, every quote is the constitution's, and the map speaks of the same version.
func Cover(m Map, c Constitution) error {
	var errs []string
	if m.Constitution != c.Version {
		errs = append(errs, fmt.Sprintf("the map is for constitution v%s, the text is v%s", m.Constitution, c.Version))
	}
	quoted := map[string]bool{}
	for _, cl := range m.Clauses {
		for _, q := range cl.Quotes {
			quoted[cl.Article+"\x00"+q] = true
		}
	}
	known := map[string]bool{}
	for _, r := range c.Requirements {
		key := r.Article + "\x00" + r.Text
		known[key] = true
		if !quoted[key] {
			errs = append(errs, fmt.Sprintf("no row proves %s", r))
		}
	}
	for _, cl := range m.Clauses {
		for _, q := range cl.Quotes {
			if !known[cl.Article+"\x00"+q] {
				errs = append(errs, fmt.Sprintf("clause %s quotes %q, which %s of the constitution does not say", cl.ID, q, cl.Article))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w:\n  %s", ErrUncovered, strings.Join(errs, "\n  "))
	}
	return nil
}

// ErrUncovered is returned by Cover when the map and the constitution disagree.
var ErrUncovered = errors.New("conformance: the clause map does not cover the constitution")

// Status of a clause after a run.
type Status string

// The statuses a clause can have.
const (
	// Pass: every test passed and at least one is an e2e proof.
	Pass Status = "pass"
	// Partial: every test passed, but none is an e2e proof.
	Partial Status = "partial"
	Fail    Status = "FAIL"
	Gap     Status = "gap"
	NotRun  Status = "not run"
)

// Row is one clause's verdict.
type Row struct {
	Clause  Clause
	Status  Status
	Results []*testreport.Result
	Missing []string
}

// Evaluate judges every clause against a report.
func Evaluate(m Map, rep *testreport.Report) []Row {
	rows := make([]Row, 0, len(m.Clauses))
	for _, c := range m.Clauses {
		row := Row{Clause: c}
		for _, name := range c.Tests {
			found := rep.Find(name)
			if len(found) == 0 {
				row.Missing = append(row.Missing, name)
			}
			row.Results = append(row.Results, found...)
		}
		switch {
		case len(c.Tests) == 0:
			row.Status = Gap
		case anyFailed(row.Results):
			row.Status = Fail
		case len(row.Missing) > 0:
			row.Status = NotRun
		case !hasE2E(c):
			row.Status = Partial
		default:
			row.Status = Pass
		}
		rows = append(rows, row)
	}
	return rows
}

func hasE2E(c Clause) bool {
	for _, t := range c.Tests {
		if c.GradeOf(t) == GradeE2E {
			return true
		}
	}
	return false
}

func anyFailed(rs []*testreport.Result) bool {
	for _, r := range rs {
		if r.Action != "pass" {
			return true
		}
	}
	return false
}

// ErrIncomplete is returned by Check when a mapped test failed or did not run.
var ErrIncomplete = errors.New("conformance: a clause's tests failed or did not run")

// Check reports clauses whose tests failed or are missing from the run (a renamed test must
// not silently stop proving its clause).
func Check(rows []Row) error {
	var bad []string
	for _, r := range rows {
		if r.Status == Fail || r.Status == NotRun {
			bad = append(bad, fmt.Sprintf("%s (%s; missing: %s)", r.Clause.ID, r.Status, strings.Join(r.Missing, ", ")))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrIncomplete, strings.Join(bad, "; "))
	}
	return nil
}

// Render writes the report as Markdown. Its first line counts the verdicts.
func Render(w io.Writer, m Map, rows []Row, header string) error {
	var b bytes.Buffer
	counts := map[Status]int{}
	for _, r := range rows {
		counts[r.Status]++
	}
	fmt.Fprintf(&b, "**%d clauses: %d pass, %d partial, %d gap, %d fail, %d not run.**\n\n", len(rows),
		counts[Pass], counts[Partial], counts[Gap], counts[Fail], counts[NotRun])
	fmt.Fprintf(&b, "# Conformance to the constitution v%s\n\n", m.Constitution)
	fmt.Fprintf(&b, "Generated by `make conformance` from the test run (%s) and the constitution's text: every "+
		"MUST, MUST NOT, MAY, guarantee and prohibition it states has a row. Each proof is graded: **e2e** (a real boot "+
		"under QEMU that asserts the property on the machine's state), **unit** (the build host), **indirect** (bears on "+
		"the clause without asserting it). A clause passes only with an e2e proof; otherwise it is **partial**, "+
		"and with no test at all it is a **gap**.\n\n", header)
	fmt.Fprintln(&b, "| clause | article | requirement | result | proved by | figures |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|")
	for _, r := range rows {
		var tests, figs []string
		for _, res := range r.Results {
			key := shortKey(res.Key())
			tests = append(tests, fmt.Sprintf("%s `%s` (%s)", r.Clause.GradeOf(key), key, res.Action))
			keys := make([]string, 0, len(res.Figures))
			for k := range res.Figures {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				figs = append(figs, k+"="+res.Figures[k])
			}
		}
		for _, miss := range r.Missing {
			tests = append(tests, fmt.Sprintf("%s `%s` (not run)", r.Clause.GradeOf(miss), miss))
		}
		proof := strings.Join(tests, "<br>")
		note := r.Clause.Note
		if r.Status == Partial {
			switch {
			case note == "":
				note = "no e2e proof"
			case len(r.Clause.Indirect) == 0:
				note = "no e2e proof; " + note
			}
		}
		if note != "" {
			if proof != "" {
				proof += "<br>"
			}
			proof += "_" + note + "_"
		}
		status := string(r.Status)
		if r.Status == Gap || r.Status == Partial {
			status = "**" + status + "**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.Clause.ID, r.Clause.Article, escape(r.Clause.Text), status, proof, strings.Join(figs, ", "))
	}
	_, err := w.Write(b.Bytes())
	return err
}

func shortKey(k string) string { return strings.TrimPrefix(k, "alpinespine.org/spine/") }

func escape(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
