// Command persona-init is the init of every persona, /bin/persona-init of the Spine. The
// governor clones it into a persona's fresh namespaces and cgroup as
//
//	persona-init persona-init --config-fd=3
//
// and it sets the persona up from the inside and execs its workload (package personainit). It is a
// program of its own, not a mode of bay0, so that a launch starts a small Go binary: it links
// only personainit and what that needs. It refuses to run anywhere but in a persona's user
// namespace.
package main

import (
	"fmt"
	"os"

	"alpinespine.org/spine/internal/bay0/launch"
	"alpinespine.org/spine/internal/bay0/personainit"
)

func main() {
	if !personainit.Inside() || len(os.Args) < 2 || os.Args[1] != launch.InitArg {
		fmt.Fprintln(os.Stderr, "persona-init: runs only as a persona's init, started by bay0")
		os.Exit(2)
	}
	personainit.Main(os.Args[2:]) // does not return
}
