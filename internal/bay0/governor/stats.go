package governor

import (
	"os"
	"strconv"
	"strings"

	"alpinespine.org/spine/internal/bay0/control"
	"alpinespine.org/spine/internal/format/handoff"
)

// kernelUptime is the time since the kernel started, as /proc/uptime says ("12.34s").
func kernelUptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0] + "s"
}

// selfRSS is bay0's resident set size in KiB, from /proc/self/status.
func selfRSS() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return -1
}

// runningKernel describes the kernel bay0 runs under: its release and version as uname
// prints them, and the hash stage 0 checked it against when it is the slot's own (boot).
func runningKernel(boot handoff.Handoff) control.KernelInfo {
	read := func(name string) string {
		b, err := os.ReadFile("/proc/sys/kernel/" + name)
		if err != nil {
			return "?"
		}
		return strings.TrimSpace(string(b))
	}
	return control.KernelInfo{Release: read("osrelease"), Version: read("version"), SHA256: boot.KernelSHA256}
}
