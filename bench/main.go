// Command bench runs the project's side-by-side benchmarks (ours against the reference tool, same
// data, same run) and prints one table of ratios. `make bench` runs it.
package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"text/tabwriter"
)

// result is one row of the table: what we measured for ours and for the reference, and the ratio
// that is the figure of merit (above 1 means ours is better, whatever the unit).
type result struct {
	Name      string
	Ours      string
	Reference string
	Ratio     float64
	Floor     float64
	Note      string
}

// benchmark produces one or more rows; it is given a scratch directory of its own.
type benchmark struct {
	name string
	run  func(ctx context.Context, dir string) ([]result, error)
}

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	benches := []benchmark{
		{name: "verity", run: benchVerity},
		{name: "persona", run: benchPersona},
		{name: "boot", run: benchBoot},
		{name: "update", run: benchUpdate},
	}
	// `go run ./bench NAME...` runs only the named benchmarks.
	if want := os.Args[1:]; len(want) > 0 {
		var some []benchmark
		for _, b := range benches {
			if slices.Contains(want, b.name) {
				some = append(some, b)
			}
		}
		benches = some
	}
	var rows []result
	for _, b := range benches {
		dir, err := os.MkdirTemp("", "spine-bench-"+b.name+"-")
		if err != nil {
			return fmt.Errorf("scratch dir for %s: %w", b.name, err)
		}
		rs, err := b.run(ctx, dir)
		os.RemoveAll(dir)
		if err != nil {
			return fmt.Errorf("benchmark %s: %w", b.name, err)
		}
		rows = append(rows, rs...)
	}
	fmt.Printf("machine: %s/%s, %d CPUs, %s\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "benchmark\tours\treference\tratio\tfloor\tnote")
	failed := false
	for _, r := range rows {
		mark := ""
		if r.Floor > 0 && r.Ratio < r.Floor {
			mark = " BELOW FLOOR"
			failed = true
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%.2fx%s\t%.2fx\t%s\n", r.Name, r.Ours, r.Reference, r.Ratio, mark, r.Floor, r.Note)
	}
	w.Flush()
	if failed {
		return fmt.Errorf("a benchmark is below its floor")
	}
	return nil
}

// median is the middle value of xs (the upper one of an even count).
func median[T cmp.Ordered](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
