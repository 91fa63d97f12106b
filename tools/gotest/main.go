// Command gotest runs `go test -json` with the given arguments, keeps the event stream in a
// file for the conformance report, and prints what a person needs: one line per package, the
// output of failed tests, skips (which are defects here), and a closing "N passed, N failed".
package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"

	"alpinespine.org/spine/internal/host/testreport"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: gotest EVENTS.json go-test-args...")
		os.Exit(2)
	}
	code, err := run(os.Args[1], os.Args[2:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "gotest:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func run(events string, args []string) (int, error) {
	out, err := os.Create(events)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	cmd := exec.Command("go", append([]string{"test", "-json"}, args...)...)
	cmd.Stderr = os.Stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	rep := testreport.New()
	readErr := rep.Read(io.TeeReader(pipe, out), os.Stdout)
	waitErr := cmd.Wait()
	if readErr != nil {
		return 0, readErr
	}
	passed, failed, skipped := rep.Counts()
	for _, r := range rep.Results {
		if r.Action == "skip" {
			fmt.Printf("SKIPPED (a skipped test is a defect): %s\n", r.Key())
		}
	}
	for _, pkg := range rep.BrokenPackages() {
		fmt.Printf("package %s failed outside its tests:\n", pkg)
		for _, l := range rep.PackageFailures[pkg] {
			fmt.Print(l)
		}
	}
	fmt.Printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if waitErr != nil || failed > 0 || skipped > 0 {
		return 1, nil
	}
	return 0, nil
}
