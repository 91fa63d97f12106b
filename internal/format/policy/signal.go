package policy

import (
	"fmt"
	"strconv"
	"strings"
)

// signals are the x86-64 Linux signals a stop_signal may name (signal(7)): the standard ones
// a workload can catch. SIGKILL and SIGSTOP cannot be caught, so they cannot ask for a
// graceful end; the real-time signals have no fixed names across C libraries.
var signals = map[string]int{
	"SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGILL": 4, "SIGTRAP": 5, "SIGABRT": 6, "SIGBUS": 7,
	"SIGFPE": 8, "SIGUSR1": 10, "SIGSEGV": 11, "SIGUSR2": 12, "SIGPIPE": 13, "SIGALRM": 14,
	"SIGTERM": 15, "SIGSTKFLT": 16, "SIGCHLD": 17, "SIGCONT": 18, "SIGTSTP": 20, "SIGTTIN": 21,
	"SIGTTOU": 22, "SIGURG": 23, "SIGXCPU": 24, "SIGXFSZ": 25, "SIGVTALRM": 26, "SIGPROF": 27,
	"SIGWINCH": 28, "SIGIO": 29, "SIGPWR": 30, "SIGSYS": 31,
}

// ParseSignal reads a signal as OCI images and operators write it: "SIGTERM", "TERM", "sigterm"
// or its number, "15".
func ParseSignal(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if SignalName(n) == "" {
			return 0, fmt.Errorf("signal %q is not one a workload can catch (1..31 but SIGKILL and SIGSTOP)", s)
		}
		return n, nil
	}
	name := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if n, ok := signals[name]; ok {
		return n, nil
	}
	return 0, fmt.Errorf("signal %q is not a signal name like SIGTERM or SIGINT that a workload can catch", s)
}

// SignalName is the name of signal n, or "" when it is not one ParseSignal accepts.
func SignalName(n int) string {
	for name, v := range signals {
		if v == n {
			return name
		}
	}
	return ""
}

// Signal is the persona's stop signal as a number. Precondition: Validate accepted the policy.
func (q Persona) Signal() int {
	n, _ := ParseSignal(q.StopSignal)
	return n
}
