// Package testreport reads the event stream of `go test -json` and keeps, for every test, its
// result, its duration and the figures it reported. Tests report a figure by logging a line
// "figure: NAME=VALUE"; the conformance report quotes them beside the clause they prove.
package testreport

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Result is the outcome of one test (or subtest), keyed by "package.TestName[/sub]".
type Result struct {
	Package string
	Test    string
	Action  string // "pass", "fail" or "skip"
	Elapsed time.Duration
	Figures map[string]string
	// Output holds the test's output lines, kept only for failures.
	Output []string
}

// Key names a test uniquely across packages.
func (r Result) Key() string { return r.Package + "." + r.Test }

// Report is every test result of one or more runs.
type Report struct {
	Results map[string]*Result
	// PackageFailures lists packages that failed outside any test (build errors, TestMain).
	PackageFailures map[string][]string
}

type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// New returns an empty report.
func New() *Report {
	return &Report{Results: map[string]*Result{}, PackageFailures: map[string][]string{}}
}

// Read adds the events of one `go test -json` stream. echo, if not nil, receives the plain text
// output, as `go test` without -json would have printed it for failures and package lines.
func (rep *Report) Read(r io.Reader, echo io.Writer) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	pending := map[string][]string{}
	pkgOut := map[string][]string{}
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			// go test prints build failures as plain text before any event.
			if echo != nil {
				fmt.Fprintln(echo, string(line))
			}
			continue
		}
		if e.Test == "" {
			switch e.Action {
			case "output":
				pkgOut[e.Package] = append(pkgOut[e.Package], e.Output)
			case "pass", "fail", "skip":
				if e.Action == "fail" {
					rep.PackageFailures[e.Package] = pkgOut[e.Package]
				}
				if echo != nil {
					fmt.Fprintf(echo, "%-4s %s %.1fs\n", map[string]string{"pass": "ok", "fail": "FAIL", "skip": "?"}[e.Action], e.Package, e.Elapsed)
				}
			}
			continue
		}
		key := e.Package + "." + e.Test
		switch e.Action {
		case "output":
			pending[key] = append(pending[key], e.Output)
		case "pass", "fail", "skip":
			res := &Result{Package: e.Package, Test: e.Test, Action: e.Action,
				Elapsed: time.Duration(e.Elapsed * float64(time.Second)), Figures: figures(pending[key])}
			if e.Action == "fail" {
				res.Output = pending[key]
				if echo != nil {
					fmt.Fprintf(echo, "--- FAIL: %s (%s)\n%s", key, res.Elapsed.Round(time.Millisecond), strings.Join(tail(pending[key], 60), ""))
				}
			}
			rep.Results[key] = res
			delete(pending, key)
		}
	}
	return sc.Err()
}

func tail(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}

// figures collects "figure: NAME=VALUE" lines from a test's output.
func figures(lines []string) map[string]string {
	var m map[string]string
	for _, l := range lines {
		_, rest, ok := strings.Cut(l, "figure: ")
		if !ok {
			continue
		}
		name, value, ok := strings.Cut(strings.TrimSpace(rest), "=")
		if !ok {
			continue
		}
		if m == nil {
			m = map[string]string{}
		}
		m[name] = value
	}
	return m
}

// Counts returns how many tests passed, failed and were skipped.
func (rep *Report) Counts() (passed, failed, skipped int) {
	for _, r := range rep.Results {
		switch r.Action {
		case "pass":
			passed++
		case "fail":
			failed++
		case "skip":
			skipped++
		}
	}
	return passed, failed + len(rep.BrokenPackages()), skipped
}

// BrokenPackages are the packages that failed although none of their tests did: a build error,
// a failing TestMain, a panic outside a test.
func (rep *Report) BrokenPackages() []string {
	var out []string
	for pkg := range rep.PackageFailures {
		broken := true
		for _, r := range rep.Results {
			if r.Package == pkg && r.Action == "fail" {
				broken = false
				break
			}
		}
		if broken {
			out = append(out, pkg)
		}
	}
	sort.Strings(out)
	return out
}

// Find returns the results whose key ends with the given test name ("TestX" or
// "pkg.TestX/sub"); a name without a package matches in any package.
func (rep *Report) Find(name string) []*Result {
	var out []*Result
	for k, r := range rep.Results {
		if k == name || strings.HasSuffix(k, "."+name) || strings.HasSuffix(k, "/"+name) {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}
