// Package denial turns the kernel's records of refused system calls into lines a person can
// act on. Every persona's seccomp filter is installed with SECCOMP_FILTER_FLAG_LOG and bay0
// sets kernel.seccomp.actions_logged, so the kernel logs each call a filter refuses as an audit
// record (type 1326, AUDIT_SECCOMP) in its ring; bay0 reads /dev/kmsg, attributes each record
// to its persona by the record's uid (each persona has a uid range of its own, which no process
// can leave), and reports it: the first refusal of each call at once, then at most one summary
// per persona per Interval, so that a loop of refusals cannot flood the console.
//
// The kernel itself rate-limits these records (printk_ratelimit: a burst of
// kernel.printk_ratelimit_burst per 5 s when no audit daemon listens; bay0 sets 50), so counts
// are lower bounds.
package denial

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"alpinespine.org/spine/internal/format/syscalls"
)

// Seccomp actions in a record's code field (linux/seccomp.h).
const (
	actionMask    = 0xffff0000
	actionKillPro = 0x80000000
	actionKillThr = 0x00000000
	actionErrno   = 0x00050000
	actionLog     = 0x7ffc0000
	// auditArchX86_64 is AUDIT_ARCH_X86_64 as the record prints it.
	auditArchX86_64 = "c000003e"
)

// Record is one refused (or, in complain mode, logged) system call.
type Record struct {
	UID     uint32
	PID     int
	Comm    string
	Syscall uint32
	// Arch is the record's audit arch, hex as printed; "c000003e" is x86-64.
	Arch string
	// Killed says the filter killed the process (a foreign ABI); Logged that it allowed the
	// call and only logged it (complain mode).
	Killed, Logged bool
}

// Call names the system call, "accept4 (288)", or the number alone for another ABI.
func (r Record) Call() string {
	if r.Arch != auditArchX86_64 {
		return fmt.Sprintf("%d of arch %s", r.Syscall, r.Arch)
	}
	if n := syscalls.Name(r.Syscall); n != "" {
		return fmt.Sprintf("%s (%d)", n, r.Syscall)
	}
	return strconv.FormatUint(uint64(r.Syscall), 10)
}

// Parse reads one /dev/kmsg record ("PRI,SEQ,TS,FLAGS;MESSAGE", continuation lines after it)
// or a bare message, and returns the seccomp record it holds, if any.
func Parse(line string) (Record, bool) {
	msg := line
	if i := strings.IndexByte(msg, ';'); i >= 0 && strings.Count(msg[:i], ",") >= 3 {
		msg = msg[i+1:]
	}
	if j := strings.IndexByte(msg, '\n'); j >= 0 {
		msg = msg[:j]
	}
	rest, ok := strings.CutPrefix(msg, "audit: type=1326 ")
	if !ok {
		return Record{}, false
	}
	fields := map[string]string{}
	for _, f := range strings.Fields(rest) {
		if k, v, ok := strings.Cut(f, "="); ok {
			fields[k] = v
		}
	}
	uid, err1 := strconv.ParseUint(fields["uid"], 10, 32)
	pid, err2 := strconv.Atoi(fields["pid"])
	nr, err3 := strconv.ParseUint(fields["syscall"], 10, 32)
	code, err4 := strconv.ParseUint(strings.TrimPrefix(fields["code"], "0x"), 16, 32)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		return Record{}, false
	}
	r := Record{UID: uint32(uid), PID: pid, Comm: strings.Trim(fields["comm"], `"`), Syscall: uint32(nr), Arch: fields["arch"]}
	switch uint32(code) & actionMask {
	case actionErrno:
	case actionKillPro, actionKillThr:
		r.Killed = true
	case actionLog:
		r.Logged = true
	default:
		return Record{}, false
	}
	return r, true
}

// Interval is the shortest time between two lines about one persona's refusals, after the
// first of each call.
const Interval = 10 * time.Second

// Tracker counts each persona's refusals and decides what to say.
type Tracker struct {
	personas map[string]*counts
}

type counts struct {
	total    map[string]int // call -> refusals since boot
	pending  map[string]int // call -> refusals not yet reported
	lastLine time.Time
}

// Add records a refusal of call by persona at now and returns the line to log, if any: the
// first refusal of each call at once, later ones summed up at most once per Interval.
func (t *Tracker) Add(persona, call string, now time.Time) (string, bool) {
	if t.personas == nil {
		t.personas = map[string]*counts{}
	}
	c := t.personas[persona]
	if c == nil {
		c = &counts{total: map[string]int{}, pending: map[string]int{}}
		t.personas[persona] = c
	}
	c.total[call]++
	c.pending[call]++
	if c.total[call] > 1 && now.Sub(c.lastLine) < Interval {
		return "", false
	}
	return t.flush(persona, c, now), true
}

// Flush returns the summary of every persona's refusals not yet reported, once Interval has
// passed since that persona's last line, as (persona, line) pairs; call it now and then so a
// burst's tail is not lost.
func (t *Tracker) Flush(now time.Time) [][2]string {
	var out [][2]string
	for _, p := range sortedKeys(t.personas) {
		if c := t.personas[p]; len(c.pending) > 0 && now.Sub(c.lastLine) >= Interval {
			out = append(out, [2]string{p, t.flush(p, c, now)})
		}
	}
	return out
}

func (t *Tracker) flush(persona string, c *counts, now time.Time) string {
	var parts []string
	for _, call := range sortedKeys(c.pending) {
		parts = append(parts, fmt.Sprintf("%s, %s", call, times(c.pending[call])))
	}
	c.pending = map[string]int{}
	c.lastLine = now
	return fmt.Sprintf("persona %s: denied syscall %s", persona, strings.Join(parts, "; "))
}

// Summary lists persona's refusals since boot, for status: "accept4 (288), 3 times".
func (t *Tracker) Summary(persona string) []string {
	c := t.personas[persona]
	if c == nil {
		return nil
	}
	var out []string
	for _, call := range sortedKeys(c.total) {
		out = append(out, fmt.Sprintf("%s, %s", call, times(c.total[call])))
	}
	return out
}

func times(n int) string {
	if n == 1 {
		return "once"
	}
	return fmt.Sprintf("%d times", n)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
