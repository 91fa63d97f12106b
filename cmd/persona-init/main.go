// Command persona-init is the init of every persona, /bin/persona-init of the Spine. The
// governor clones it into a persona's fresh namespaces and cgroup as
//
//	persona-init persona-init --config-fd=3
//
// and it sets the persona up from the inside and execs its workload (package personainit). It is a
// program of its own, not a mode of bay0, so that a launch starts a small Go binary: it links
// only personainit and what that needs. It refuses to run anywhere but in a persona's user
// namespace, but for its persona-check mode (launch.CheckArg), which runs a persona's exec
// health check and which the governor starts in the persona's PID namespace but in the
// initial user namespace (see package persona's Check).
package main

import (
	"fmt"
	"os"

	"alpinespine.org/spine/internal/bay0/launch"
	"alpinespine.org/spine/internal/bay0/personainit"
)

func main() {
	// persona-check runs a persona's exec health check: the governor forks it into the
	// persona's PID namespace, in the initial user namespace, so it is never PID 1 and never
	// inside; it refuses to run anywhere else.
	if len(os.Args) > 1 && os.Args[1] == launch.CheckArg && !personainit.Inside() && os.Getpid() != 1 {
		personainit.CheckMain(os.Args[2:]) // does not return
	}
	if !personainit.Inside() || len(os.Args) < 2 || os.Args[1] != launch.InitArg {
		fmt.Fprintln(os.Stderr, "persona-init: runs only as a persona's init, started by bay0")
		os.Exit(2)
	}
	personainit.Main(os.Args[2:]) // does not return
}
