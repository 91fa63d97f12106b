// Package event is the one stable, parseable console line bay0 prints for each change of the
// machine's state, shared by bay0 (which prints), `spine ctl` and the e2e suite (which read).
//
// A line is
//
//	bay0: event=KIND key=value key="quoted value" ...
//
// anchored at the start of the line. KIND is lower-case words joined by '-', keys are
// lower-case words joined by '_', and a value is either a bare token of safe characters or a
// Go-quoted ASCII string, so an event is always one printable line. The human-readable lines
// bay0 prints beside them are for people and may change; events are for programs.
//
// Only bay0 can print a line that starts with Prefix: every persona line reaches the console
// with "persona NAME: " in front and its control characters replaced (persona.CopyLines), so
// a persona that prints an event line produces a line that Parse refuses.
package event

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Prefix starts every event line.
const Prefix = "bay0: event="

// MaxLine bounds an event line; Parse refuses longer input.
const MaxLine = 4096

// Kind names a state change.
type Kind string

// The kinds bay0 prints, with the attributes each carries.
const (
	// Stage 1 (initramfs).
	Stage1Start  Kind = "stage1-start"  // role (stage1, stage0, or "slot a"/"slot b" under the slot's own kernel)
	SysRq        Kind = "sysrq"         // value (what /proc/sys/kernel/sysrq reads after bay0 set it; "absent" without SysRq)
	SlotTry      Kind = "slot-try"      // slot state tries_left
	SlotFailed   Kind = "slot-failed"   // slot reason
	SlotVerified Kind = "slot-verified" // slot name version root
	NoBoot       Kind = "no-boot"       // reason (one event per reason)
	SwitchRoot   Kind = "switch-root"   // slot
	KernelStart  Kind = "kernel-start"  // slot release sha256 (stage 0 starts the slot's own kernel)

	// Governor.
	KexecDisabled    Kind = "kexec-disabled"    // (kexec_load_disabled set: no other kernel can be loaded this boot)
	LastReset        Kind = "last-reset"        // reason
	RootChecked      Kind = "root-checked"      // fstype source options
	PersistWrong     Kind = "persist-wrong"     // attempt
	PersistUnlocked  Kind = "persist-unlocked"  // kdf derive_ms
	PersistMounted   Kind = "persist-mounted"   // mountinfo
	PersistBoot      Kind = "persist-boot"      // count
	PersistClosed    Kind = "persist-closed"    //
	WatchdogArmed    Kind = "watchdog-armed"    // timeout_ms
	WatchdogStarving Kind = "watchdog-starving" // reason
	SlotUp           Kind = "slot-up"           // slot version name
	ControlServing   Kind = "control-serving"   // port
	ControlAbsent    Kind = "control-absent"    // reason
	PersonasUp       Kind = "personas-up"       // uptime rss_kib
	PersonasDown     Kind = "personas-down"     // ms (every persona stopped before the machine goes down)
	Committed        Kind = "slot-committed"    // slot version min_version
	PersonaRefused   Kind = "persona-refused"   // name reason
	PersonaFailed    Kind = "persona-failed"    // name reason (could not start)
	PersonaStarted   Kind = "persona-started"   // name pid startup_us
	PersonaExited    Kind = "persona-exited"    // name reason
	PersonaStopped   Kind = "persona-stopped"   // name
	PersonaEnded     Kind = "persona-ended"     // name signal ms killed (a stop: how the workload answered its stop signal)
	PersonaReplaced  Kind = "persona-replaced"  // name
	PersonaCleanup   Kind = "persona-cleanup"   // name reason (cleanup failed)
	PersonaStuck     Kind = "persona-stuck"     // name reason (stuck at memory.max: replaced)
	PersonaDenied    Kind = "persona-denied"    // name calls (system calls its filter refused)
	LogsKept         Kind = "logs-kept"         // name lines bytes (its log kept in /persist; lines read back)
	PersonaHealthy   Kind = "persona-healthy"   // name ms (its health check passed, ms after its start)
	PersonaUnhealthy Kind = "persona-unhealthy" // name reason (its health check failed its retries: replaced)
	UpdateAccepted   Kind = "update-accepted"   // name version slot
	CourierAsked     Kind = "courier-asked"     // name ref (the operator named an artifact; the courier persona fetches it)
	UpdateFailed     Kind = "update-failed"     // slot reason
	UpdateStaged     Kind = "update-staged"     // name version slot write_ms verify_ms
	UpdateWriting    Kind = "update-writing"    // slot (its previous Spine is given up)
	UpdateRestored   Kind = "update-restored"   // slot name version (a copy of the running Spine)
	UpdateCut        Kind = "update-cut"        // slot (left half-written by a power cut)
	PersistDamage    Kind = "persist-damage"    // reason (found and worked around)
	FaultArmed       Kind = "fault-armed"       // kind (test builds only)
	FaultFired       Kind = "fault-fired"       // kind (test builds only)
	Halt             Kind = "halt"              // action reason
	Phase            Kind = "phase"             // name ms [error]: a boot phase ended
	TrialDeadline    Kind = "trial-deadline"    // slot deadline_ms missing: the trial gave up
	Containment      Kind = "containment"       // name reason: a persona could not be confirmed gone
)

// Attr is one key=value pair of an event.
type Attr struct {
	Key, Value string
}

// KV returns the attribute key=value, for Matches and the waits of the e2e suite.
func KV(key, value string) Attr { return Attr{Key: key, Value: value} }

// Event is one state change: its kind and its attributes, in the order printed.
type Event struct {
	Kind  Kind
	Attrs []Attr
}

// New returns an event of kind k without attributes.
func New(k Kind) Event { return Event{Kind: k} }

// With returns e with key=value appended. Keys must be lower-case words joined by '_'; an
// invalid key makes String print an event that Parse refuses, which the tests of each
// caller catch, so With itself never fails.
func (e Event) With(key, value string) Event {
	e.Attrs = append(e.Attrs[:len(e.Attrs):len(e.Attrs)], Attr{key, value})
	return e
}

// Uint returns e with key set to the decimal v.
func (e Event) Uint(key string, v uint64) Event { return e.With(key, strconv.FormatUint(v, 10)) }

// Int returns e with key set to the decimal v.
func (e Event) Int(key string, v int64) Event { return e.With(key, strconv.FormatInt(v, 10)) }

// Get returns the value of key and whether it is present.
func (e Event) Get(key string) (string, bool) {
	for _, a := range e.Attrs {
		if a.Key == key {
			return a.Value, true
		}
	}
	return "", false
}

// Value returns the value of key, "" if absent.
func (e Event) Value(key string) string {
	v, _ := e.Get(key)
	return v
}

// String renders e as one console line, without the newline.
func (e Event) String() string {
	var b strings.Builder
	b.WriteString(Prefix)
	b.WriteString(string(e.Kind))
	for _, a := range e.Attrs {
		b.WriteByte(' ')
		b.WriteString(a.Key)
		b.WriteByte('=')
		b.WriteString(quote(a.Value))
	}
	return b.String()
}

// Matches reports whether e is of kind k and carries every attribute of want with the same
// value (want may hold fewer attributes than e).
func (e Event) Matches(k Kind, want ...Attr) bool {
	if e.Kind != k {
		return false
	}
	for _, w := range want {
		if v, ok := e.Get(w.Key); !ok || v != w.Value {
			return false
		}
	}
	return true
}

// ErrNotEvent is returned by Parse for a line that does not start with Prefix.
var ErrNotEvent = errors.New("not an event line")

// Parse reads one event line (without its newline). A line that does not start with Prefix
// is ErrNotEvent; a line that does but is malformed is an error naming what is wrong.
func Parse(line string) (Event, error) {
	rest, ok := strings.CutPrefix(line, Prefix)
	if !ok {
		return Event{}, ErrNotEvent
	}
	if len(line) > MaxLine {
		return Event{}, fmt.Errorf("event line of %d bytes, at most %d", len(line), MaxLine)
	}
	kind, rest, _ := strings.Cut(rest, " ")
	if !validName(kind, '-') {
		return Event{}, fmt.Errorf("event kind %q: want lower-case words joined by '-'", kind)
	}
	e := Event{Kind: Kind(kind)}
	for rest != "" {
		key, after, ok := strings.Cut(rest, "=")
		if !ok {
			return Event{}, fmt.Errorf("event %s: attribute %q has no '='", kind, rest)
		}
		if !validName(key, '_') {
			return Event{}, fmt.Errorf("event %s: attribute key %q: want lower-case words joined by '_'", kind, key)
		}
		if _, dup := e.Get(key); dup {
			return Event{}, fmt.Errorf("event %s: attribute %q given twice", kind, key)
		}
		var value string
		if strings.HasPrefix(after, `"`) {
			q, err := strconv.QuotedPrefix(after)
			if err != nil {
				return Event{}, fmt.Errorf("event %s: attribute %s: bad quoted value: %w", kind, key, err)
			}
			if value, err = strconv.Unquote(q); err != nil {
				return Event{}, fmt.Errorf("event %s: attribute %s: bad quoted value: %w", kind, key, err)
			}
			after = after[len(q):]
		} else {
			i := strings.IndexByte(after, ' ')
			if i < 0 {
				i = len(after)
			}
			if value = after[:i]; !bare(value) {
				return Event{}, fmt.Errorf("event %s: attribute %s: value %q must be quoted", kind, key, value)
			}
			after = after[i:]
		}
		switch {
		case after == "":
		case strings.HasPrefix(after, " ") && len(after) > 1:
			after = after[1:]
		default:
			return Event{}, fmt.Errorf("event %s: attribute %s: want one space before the next attribute", kind, key)
		}
		e.Attrs = append(e.Attrs, Attr{key, value})
		rest = after
	}
	return e, nil
}

// Valid reports whether e prints as a line that Parse reads back as e.
func (e Event) Valid() error {
	if !validName(string(e.Kind), '-') {
		return fmt.Errorf("event kind %q: want lower-case words joined by '-'", e.Kind)
	}
	seen := map[string]bool{}
	for _, a := range e.Attrs {
		if !validName(a.Key, '_') {
			return fmt.Errorf("event %s: attribute key %q: want lower-case words joined by '_'", e.Kind, a.Key)
		}
		if seen[a.Key] {
			return fmt.Errorf("event %s: attribute %q given twice", e.Kind, a.Key)
		}
		seen[a.Key] = true
	}
	if n := len(e.String()); n > MaxLine {
		return fmt.Errorf("event %s: %d bytes, at most %d", e.Kind, n, MaxLine)
	}
	return nil
}

// validName: one or more words of [a-z0-9] joined by single sep characters.
func validName(s string, sep byte) bool {
	if s == "" || s[0] == sep || s[len(s)-1] == sep {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == sep && s[i-1] != sep:
		default:
			return false
		}
	}
	return true
}

// bare reports whether v can be printed without quotes: it is non-empty and made only of
// characters that cannot be confused with the line's structure.
func bare(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("._:/+@,%-", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func quote(v string) string {
	if bare(v) {
		return v
	}
	return strconv.QuoteToASCII(v)
}
