// Command conformance renders CONFORMANCE.md from conformance/clauses.toml, the constitution's
// text and the event files that tools/gotest kept of a test run. It fails when a binding item of
// the constitution has no row, or a mapped test failed or did not run.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"alpinespine.org/spine/internal/host/conformance"
	"alpinespine.org/spine/internal/host/testreport"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
}

func run() error {
	clauses := flag.String("clauses", "conformance/clauses.toml", "clause map")
	law := flag.String("constitution", "../shared/CONSTITUTION.md", "the constitution's text")
	events := flag.String("events", ".cache/unit.json,.cache/e2e.json", "comma-separated go test -json event files")
	out := flag.String("out", "CONFORMANCE.md", "report to write")
	flag.Parse()
	f, err := os.Open(*clauses)
	if err != nil {
		return err
	}
	m, err := conformance.Load(f)
	f.Close()
	if err != nil {
		return err
	}
	lf, err := os.Open(*law)
	if err != nil {
		return fmt.Errorf("the report is checked against the constitution's text: %w", err)
	}
	c, err := conformance.ParseConstitution(lf)
	lf.Close()
	if err != nil {
		return err
	}
	if err := conformance.Cover(m, c); err != nil {
		return err
	}
	rep := testreport.New()
	for _, p := range strings.Split(*events, ",") {
		ef, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("read test events (run make unit e2e first): %w", err)
		}
		err = rep.Read(ef, nil)
		ef.Close()
		if err != nil {
			return err
		}
	}
	rows := conformance.Evaluate(m, rep)
	o, err := os.Create(*out)
	if err != nil {
		return err
	}
	passed, failed, _ := rep.Counts()
	if err := conformance.Render(o, m, rows, fmt.Sprintf("%d tests passed, %d failed", passed, failed)); err != nil {
		o.Close()
		return err
	}
	if err := o.Close(); err != nil {
		return err
	}
	fmt.Printf("conformance: wrote %s\n", *out)
	return conformance.Check(rows)
}
