// Command bench runs the project's side-by-side benchmarks (ours against the reference tool, same
// data, same run) and prints each row as it is measured, as a Markdown table row.
//
//	go run ./bench [--quick] [--json FILE] [NAME...]
//
// NAME selects benchmarks (verity, persona, boot, firmware, update, courier); none means all. --quick runs each
// with small sizes and one or few runs, to prove it still works (the integration tests do
// this); its ratios mean little. --json writes every row, as a JSON list, to FILE.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// result is one row: what we measured for ours and for the reference, and the ratio that is the
// figure of merit (above 1 means ours is better, whatever the unit). Times are in
// milliseconds; memory rows give KiB instead.
type result struct {
	Name        string  `json:"name"`
	OursMS      float64 `json:"ours_ms,omitempty"`
	Reference   string  `json:"reference"`
	ReferenceMS float64 `json:"reference_ms,omitempty"`
	OursKiB     float64 `json:"ours_kib,omitempty"`
	RefKiB      float64 `json:"reference_kib,omitempty"`
	Ratio       float64 `json:"ratio"`
	// Floor is the ratio below which the full run fails; 0 is none.
	Floor float64 `json:"floor,omitempty"`
	// Conditions says what was measured and how: threads, cache state, KDF cost, TCG, load.
	Conditions string `json:"conditions"`
}

// timed is a row comparing two durations; the ratio is reference / ours.
func timed(name string, ours time.Duration, ref string, refD time.Duration, cond string) result {
	return result{Name: name, OursMS: ms(ours), Reference: ref, ReferenceMS: ms(refD),
		Ratio: float64(refD) / float64(ours), Conditions: cond}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// config is what every benchmark is given.
type config struct {
	// quick asks for small sizes and few runs: the benchmark proves it works, no more.
	quick bool
	// machine prepares (once) the demo machine the booting benchmarks share.
	machine func(ctx context.Context) (machine, error)
	// emit reports a row as soon as it is measured.
	emit func(result)
}

// runs is n in a full run and 1 in a quick one.
func (c config) runs(n int) int {
	if c.quick {
		return 1
	}
	return n
}

// benchmark produces rows through cfg.emit; it is given a scratch directory of its own.
type benchmark struct {
	name string
	run  func(ctx context.Context, cfg config, dir string) error
}

var benchmarks = []benchmark{
	{name: "verity", run: benchVerity},
	{name: "persona", run: benchPersona},
	{name: "boot", run: benchBoot},
	{name: "firmware", run: benchFirmware},
	{name: "update", run: benchUpdate},
	{name: "courier", run: benchCourier},
}

func main() {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	quick := fs.Bool("quick", false, "small sizes and one run each: proves the benchmarks work")
	jsonOut := fs.String("json", "", "also write every row as JSON to `FILE`")
	_ = fs.Parse(os.Args[1:])
	rows, err := run(context.Background(), os.Stdout, *quick, fs.Args())
	// Rows below their floor are still true measurements; a benchmark that failed leaves none.
	if *jsonOut != "" && (err == nil || errors.Is(err, errBelowFloor)) {
		if werr := writeJSON(*jsonOut, rows); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var errBelowFloor = errors.New("below floor")

// run runs the named benchmarks (all if none), printing each row to out as it arrives, and
// returns the rows. In a full run, a ratio below its floor is an error.
func run(ctx context.Context, out io.Writer, quick bool, names []string) ([]result, error) {
	var selected []benchmark
	for _, n := range names {
		i := slices.IndexFunc(benchmarks, func(b benchmark) bool { return b.name == n })
		if i < 0 {
			return nil, fmt.Errorf("no benchmark %q (have %s)", n, strings.Join(benchmarkNames(), ", "))
		}
		selected = append(selected, benchmarks[i])
	}
	if len(selected) == 0 {
		selected = benchmarks
	}
	shared, err := os.MkdirTemp("", "spine-bench-machine-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(shared)
	var (
		rows   []result
		below  []string
		m      machine
		mErr   error
		mReady bool
	)
	mode := "full"
	if quick {
		mode = "quick (sizes and runs cut down: ratios are not meaningful)"
	}
	fmt.Fprintf(out, "machine: %s/%s, %d CPUs, %s, load average at start %s; mode %s\n\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), loadAverage(), mode)
	fmt.Fprintln(out, "| benchmark | ours | reference | ratio | floor | conditions |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|")
	cfg := config{
		quick: quick,
		machine: func(ctx context.Context) (machine, error) {
			if !mReady {
				m, mErr = prepareMachine(ctx, shared)
				mReady = true
			}
			return m, mErr
		},
		emit: func(r result) {
			// Other work on the machine slows every side, not always alike: say how much.
			r.Conditions += "; load average " + loadAverage()
			rows = append(rows, r)
			floor := "-"
			if r.Floor > 0 {
				floor = fmt.Sprintf("%.2fx", r.Floor)
				if !quick && r.Ratio < r.Floor {
					floor += " BELOW"
					below = append(below, r.Name)
				}
			}
			fmt.Fprintf(out, "| %s | %s | %s | %.2fx | %s | %s |\n", r.Name, r.ours(), r.reference(), r.Ratio, floor, r.Conditions)
		},
	}
	for _, b := range selected {
		dir, err := os.MkdirTemp("", "spine-bench-"+b.name+"-")
		if err != nil {
			return rows, fmt.Errorf("scratch dir for %s: %w", b.name, err)
		}
		err = b.run(ctx, cfg, dir)
		os.RemoveAll(dir)
		if err != nil {
			return rows, fmt.Errorf("benchmark %s: %w", b.name, err)
		}
	}
	fmt.Fprintf(out, "\nload average at end %s\n", loadAverage())
	if len(below) > 0 {
		return rows, fmt.Errorf("%w: %s", errBelowFloor, strings.Join(below, ", "))
	}
	return rows, nil
}

// benchmarkNames lists the benchmarks in the order a full run runs them.
func benchmarkNames() []string {
	var names []string
	for _, b := range benchmarks {
		names = append(names, b.name)
	}
	return names
}

func (r result) ours() string {
	if r.OursKiB > 0 {
		return fmt.Sprintf("%.1f MiB", r.OursKiB/1024)
	}
	return showMS(r.OursMS)
}

func (r result) reference() string {
	switch {
	case r.RefKiB > 0:
		return fmt.Sprintf("%s %.1f MiB", r.Reference, r.RefKiB/1024)
	case r.ReferenceMS > 0:
		return r.Reference + " " + showMS(r.ReferenceMS)
	}
	return r.Reference
}

// showMS prints milliseconds readably: "12.3 ms", "493 ms", "4.90 s".
func showMS(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2f s", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	}
	return fmt.Sprintf("%.1f ms", v)
}

// loadAverage is the 1-, 5- and 15-minute load average, as /proc/loadavg says.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// writeJSON writes rows to path, whole or not at all.
func writeJSON(path string, rows []result) error {
	if rows == nil {
		rows = []result{}
	}
	b, err := json.MarshalIndent(rows, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(fmt.Errorf("write %s: %w", path, err), os.Remove(tmp))
	}
	return nil
}

// median is the middle value of xs (the upper one of an even count).
func median[T cmp.Ordered](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
