// Package fault is bay0's test-only fault injection: in a build with the faultinject tag,
// bay0.fault=KIND on the kernel command line makes bay0 misbehave at a named point, so the
// e2e suite can prove that the machine resets and falls back. Where no command line can be
// given (a disk booted by firmware: stage 0's is built in and signed), the kind is fixed when
// the test build is linked instead (BuiltinVar), so the disk itself carries the fault. Release
// builds compile Enabled to false and carry none of it; the audit refuses a bay0 that contains
// the marker.
//
// Kinds: "panic" and "hang-main" (the governor's main loop, a few seconds after the system
// is up), "panic-after-commit" (the governor panics 10 s after it commits), and "hang-POINT"
// for the named points of the boot: stage1-a and stage1-b (stage 1, once it has written the
// try of that slot), unlock (the passphrase prompt loop), personas (the persona start) and
// control (the control channel's status verb); "containment" makes the supervisor unable to
// confirm that an ended persona's processes are gone (as if its cgroup did not empty).
// "crash-POINT" makes bay0 die at a named point the way a Go runtime fatal error does, past
// any recover of its own, so PID 1 exits and the kernel panics: stage1 (stage 1, once the
// pseudo filesystems are up and before it arms the watchdog) and main (the governor's main
// loop, as soon as the system is up).
package fault

import (
	"os"
	"strings"
)

// Enabled reports whether this is a fault-injection build.
const Enabled = enabled

// Marker is linked into a fault-injection build, and printed when a fault is armed.
const Marker = marker

// BuiltinVar is the variable a fault-injection build's fault kind is linked into:
// go build -tags faultinject -ldflags "-X BuiltinVar=KIND". A release build has no such
// variable, so the same flag does nothing there.
const BuiltinVar = "alpinespine.org/spine/internal/bay0/fault.builtin"

// Kind returns the fault kind linked into the build, else the bay0.fault= value of the kernel
// command line, or "" (always "" in a release build).
func Kind() string {
	if !enabled {
		return ""
	}
	if k := builtinKind(); k != "" {
		return k
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	for _, w := range strings.Fields(string(cmdline)) {
		if k, ok := strings.CutPrefix(w, "bay0.fault="); ok {
			return k
		}
	}
	return ""
}

// HangAt blocks forever when the command line asks for a hang at point; before blocking it
// calls announce, so the test knows when the hang began.
func HangAt(point string, announce func()) {
	if !enabled || Kind() != "hang-"+point {
		return
	}
	announce()
	select {}
}

// CrashAt kills bay0 when the fault kind is crash-point: after announce, a panic on a
// goroutine of its own ends the process as a runtime fatal error would, out of reach of the
// recover in bay0's main, so no halt runs and what follows is the kernel's doing.
func CrashAt(point string, announce func()) {
	if !enabled || Kind() != "crash-"+point {
		return
	}
	announce()
	go func() { panic("injected fault: bay0 crashes at " + point) }()
	select {}
}
