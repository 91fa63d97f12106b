// Package control is the governor's control channel: a closed set of verbs spoken as
// newline-delimited JSON over a byte stream (the virtio-serial port bay0.ctl in the guest, a
// unix socket on the host).
//
// One request line gets one response line:
//
//	-> {"v":1,"id":7,"verb":"stop","name":"web"}
//	<- {"v":1,"id":7,"ok":true,"result":{}}
//	-> {"v":1,"id":8,"verb":"exec","name":"/bin/sh"}
//	<- {"v":1,"id":8,"ok":false,"error":"unknown verb \"exec\""}
//
// Decoding is strict: a request line is at most MaxRequestLine bytes, field names match
// exactly, an unknown, duplicated, missing or (for the verb) superfluous field is an error, and
// so is any version but Version. The verb set is closed: no verb runs a command, opens a shell,
// reads or writes a file or changes the policy. The channel is a serial line, so it has no
// connection boundaries; the server resynchronises on the next newline and never stops serving.
package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"alpinespine.org/spine/internal/bay0/update"
	"alpinespine.org/spine/internal/format/courier"
)

// Version is the protocol version, the "v" of every request and response.
const Version = 1

// Size bounds of the protocol, not counting the newline that ends a line.
const (
	// MaxRequestLine bounds a request line; a longer line is consumed up to its newline and
	// answered with an error. The largest request is update, whose offer carries a manifest
	// (at most 64 KiB) in base64.
	MaxRequestLine = 128 << 10
	// MaxUpdateBody bounds the raw body that follows an accepted update offer.
	MaxUpdateBody = 1 << 40
	// MaxResponseLine bounds a response line. The largest answer is logs: DefaultLogLines
	// lines of DefaultLogLineLen bytes, at most doubled by JSON escaping, fits.
	MaxResponseLine = 1 << 20
	// MaxError bounds the error message of a response.
	MaxError = 1 << 10
	// maxShownKey bounds how much of an unknown field name an error message quotes.
	maxShownKey = 64
	// maxName bounds a persona name (the policy allows 31 bytes).
	maxName = 64
)

// Verb is what a request asks for.
type Verb string

// The closed set of verbs. Nothing else is answered.
const (
	VerbStatus   Verb = "status"
	VerbPersonas Verb = "personas"
	VerbLogs     Verb = "logs"
	VerbReplace  Verb = "replace"
	VerbStop     Verb = "stop"
	VerbStart    Verb = "start"
	VerbReboot   Verb = "reboot"
	VerbPoweroff Verb = "poweroff"
	VerbUpdate   Verb = "update"
)

// Verbs returns the closed verb set in a fixed order.
func Verbs() []Verb {
	return []Verb{VerbStatus, VerbPersonas, VerbLogs, VerbReplace, VerbStop, VerbStart,
		VerbReboot, VerbPoweroff, VerbUpdate}
}

// nameRule says whether a verb's request carries a persona name.
type nameRule int

const (
	noName       nameRule = iota
	needsName             // replace, stop, start: the persona acted on
	optionalName          // logs: a persona's lines, or bay0's own without
)

// spec says whether v is a verb and whether it takes a name. The fields of update (offer,
// size) and of logs (after) are checked in Validate.
func spec(v Verb) (known bool, name nameRule) {
	switch v {
	case VerbStatus, VerbPersonas, VerbReboot, VerbPoweroff, VerbUpdate:
		return true, noName
	case VerbLogs:
		return true, optionalName
	case VerbReplace, VerbStop, VerbStart:
		return true, needsName
	}
	return false, noName
}

// TakesName reports whether v acts on one persona and so needs a name.
func (v Verb) TakesName() bool {
	_, n := spec(v)
	return n == needsName
}

// MayTakeName reports whether v accepts a persona name at all (logs takes one optionally).
func (v Verb) MayTakeName() bool {
	_, n := spec(v)
	return n != noName
}

// Protocol errors. A decoder error wraps one of them; the server sends its text back.
var (
	ErrTooLong         = errors.New("line too long")
	ErrSyntax          = errors.New("malformed JSON")
	ErrVersion         = errors.New("unsupported protocol version")
	ErrUnknownVerb     = errors.New("unknown verb")
	ErrUnknownField    = errors.New("unknown field")
	ErrDuplicateField  = errors.New("duplicate field")
	ErrMissingField    = errors.New("missing field")
	ErrUnexpectedField = errors.New("field not allowed")
	ErrBadName         = errors.New("bad persona name")
	ErrBadSource       = errors.New("bad update source")
	ErrBadResponse     = errors.New("bad response")
	// ErrNotSupported answers a verb the governor does not implement yet (update, until the
	// Handler is also an Updater).
	ErrNotSupported = errors.New("not supported yet")
)

// Request is one request line.
type Request struct {
	// V is the protocol version; it must be Version.
	V int `json:"v"`
	// ID is echoed in the response so a client can tell its answer from a stale one.
	ID uint64 `json:"id"`
	// Verb is what is asked.
	Verb Verb `json:"verb"`
	// Name is the persona of replace, stop and start, and optionally of logs (whose lines
	// are asked for; bay0's own without it); other verbs must not carry it.
	Name string `json:"name,omitempty"`
	// After belongs to logs only: the sequence number of the last line the client has, so
	// only newer lines come back (spine ctl logs --follow). 0 asks for every line kept.
	After uint64 `json:"after,omitempty"`
	// Offer and Size belong to update only: the image's footer, manifest and signature, checked
	// before anything is written, and the length of the raw body that follows the "ready"
	// answer (see Serve).
	Offer *update.Offer `json:"offer,omitempty"`
	Size  int64         `json:"size,omitempty"`
	// Source belongs to update only, instead of Offer and Size: the artifact the machine's
	// courier persona fetches, oci://REGISTRY/REPOSITORY@sha256:DIGEST (package courier).
	// The digest is the operator's word: bay0 accepts no other bytes.
	Source string `json:"source,omitempty"`
}

// Validate checks r against the rules DecodeRequest applies to a line.
func (r Request) Validate() error {
	if r.V != Version {
		return fmt.Errorf("%w %d (this governor speaks %d)", ErrVersion, r.V, Version)
	}
	known, rule := spec(r.Verb)
	if !known {
		return fmt.Errorf("%w %q", ErrUnknownVerb, shorten(string(r.Verb)))
	}
	switch {
	case r.Verb == VerbUpdate && r.Source != "":
		if r.Offer != nil || r.Size != 0 {
			return fmt.Errorf("%w: update takes either a source or an offer and a size", ErrUnexpectedField)
		}
		if _, err := courier.ParseRef(r.Source); err != nil {
			return fmt.Errorf("%w: %v", ErrBadSource, err)
		}
	case r.Verb == VerbUpdate && (r.Offer == nil || r.Size <= 0 || r.Size > MaxUpdateBody):
		return fmt.Errorf("%w: update needs an offer and a body size in 1..%d, or a source", ErrMissingField, int64(MaxUpdateBody))
	case r.Verb != VerbUpdate && (r.Offer != nil || r.Size != 0 || r.Source != ""):
		return fmt.Errorf("%w \"offer\"/\"size\"/\"source\" for %s", ErrUnexpectedField, r.Verb)
	case r.Verb != VerbLogs && r.After != 0:
		return fmt.Errorf("%w \"after\" for %s", ErrUnexpectedField, r.Verb)
	case rule == needsName && r.Name == "":
		return fmt.Errorf("%w \"name\": %s needs a persona name", ErrMissingField, r.Verb)
	case rule == noName && r.Name != "":
		return fmt.Errorf("%w \"name\" for %s", ErrUnexpectedField, r.Verb)
	case r.Name != "":
		return checkName(r.Name)
	}
	return nil
}

// checkName applies the policy's persona name rule, [a-z][a-z0-9-]*, with a bound.
func checkName(n string) error {
	ok := len(n) > 0 && len(n) <= maxName && n[0] >= 'a' && n[0] <= 'z'
	for i := 0; ok && i < len(n); i++ {
		c := n[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%w %q", ErrBadName, shorten(n))
	}
	return nil
}

// EncodeRequest validates r and returns its line, newline included. Field order is fixed, so
// equal requests give equal bytes.
func EncodeRequest(r Request) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return marshalLine(r)
}

// DecodeRequest decodes one request line (without its newline; trailing JSON whitespace, such
// as the \r of a terminal, is allowed). On error the returned Request holds the fields decoded
// so far, so the ID of a bad request can still be echoed.
func DecodeRequest(line []byte) (Request, error) {
	var r Request
	if len(line) > MaxRequestLine {
		return r, fmt.Errorf("%w: a request is at most %d bytes", ErrTooLong, MaxRequestLine)
	}
	var hasV, hasID, hasVerb, hasName bool
	err := decodeObject(line, func(key string, raw json.RawMessage) error {
		switch key {
		case "v":
			hasV = true
			return unmarshalField(key, raw, &r.V)
		case "id":
			hasID = true
			return unmarshalField(key, raw, &r.ID)
		case "verb":
			hasVerb = true
			return unmarshalField(key, raw, &r.Verb)
		case "name":
			hasName = true
			return unmarshalField(key, raw, &r.Name)
		case "offer":
			r.Offer = &update.Offer{}
			return unmarshalStrict(key, raw, r.Offer)
		case "size":
			return unmarshalField(key, raw, &r.Size)
		case "after":
			return unmarshalField(key, raw, &r.After)
		case "source":
			return unmarshalField(key, raw, &r.Source)
		}
		return fmt.Errorf("%w %q", ErrUnknownField, shorten(key))
	})
	if err != nil {
		return r, err
	}
	for _, f := range []struct {
		name string
		has  bool
	}{{"v", hasV}, {"id", hasID}, {"verb", hasVerb}} {
		if !f.has {
			return r, fmt.Errorf("%w %q", ErrMissingField, f.name)
		}
	}
	if r.V != Version {
		return r, fmt.Errorf("%w %d (this governor speaks %d)", ErrVersion, r.V, Version)
	}
	known, rule := spec(r.Verb)
	if !known {
		return r, fmt.Errorf("%w %q", ErrUnknownVerb, shorten(string(r.Verb)))
	}
	if hasName && rule == noName {
		return r, fmt.Errorf("%w \"name\" for %s", ErrUnexpectedField, r.Verb)
	}
	return r, r.Validate()
}

// Response is one response line: OK with a Result object, or not OK with an Error.
type Response struct {
	// V is the protocol version, Version.
	V int `json:"v"`
	// ID is the ID of the request answered, 0 if the request was too broken to have one.
	ID uint64 `json:"id"`
	// OK says whether the request was carried out.
	OK bool `json:"ok"`
	// Result is a JSON object, present exactly when OK.
	Result json.RawMessage `json:"result,omitempty"`
	// Error says why not, present exactly when not OK.
	Error string `json:"error,omitempty"`
}

// Validate checks the rules DecodeResponse applies to a line.
func (r Response) Validate() error {
	if r.V != Version {
		return fmt.Errorf("%w: %w %d", ErrBadResponse, ErrVersion, r.V)
	}
	if r.OK {
		if r.Error != "" {
			return fmt.Errorf("%w: ok with an error", ErrBadResponse)
		}
		if t := bytes.TrimLeft(r.Result, " \t\r\n"); len(t) == 0 || t[0] != '{' || !json.Valid(t) {
			return fmt.Errorf("%w: result is not a JSON object", ErrBadResponse)
		}
		return nil
	}
	if r.Error == "" || r.Result != nil {
		return fmt.Errorf("%w: a failure carries an error and no result", ErrBadResponse)
	}
	return nil
}

// EncodeResponse validates r and returns its line, newline included, with the result compacted.
func EncodeResponse(r Response) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("encode response: %w", err)
	}
	if r.Result != nil {
		var b bytes.Buffer
		if err := json.Compact(&b, r.Result); err != nil {
			return nil, fmt.Errorf("encode response: %w", err)
		}
		r.Result = b.Bytes()
	}
	return marshalLine(r)
}

// DecodeResponse decodes one response line (without its newline) as strictly as requests.
func DecodeResponse(line []byte) (Response, error) {
	var r Response
	if len(line) > MaxResponseLine {
		return r, fmt.Errorf("%w: a response is at most %d bytes", ErrTooLong, MaxResponseLine)
	}
	var hasV, hasID, hasOK bool
	err := decodeObject(line, func(key string, raw json.RawMessage) error {
		switch key {
		case "v":
			hasV = true
			return unmarshalField(key, raw, &r.V)
		case "id":
			hasID = true
			return unmarshalField(key, raw, &r.ID)
		case "ok":
			hasOK = true
			return unmarshalField(key, raw, &r.OK)
		case "result":
			r.Result = append(json.RawMessage(nil), raw...)
			return nil
		case "error":
			return unmarshalField(key, raw, &r.Error)
		}
		return fmt.Errorf("%w %q", ErrUnknownField, shorten(key))
	})
	if err != nil {
		return r, err
	}
	if !hasV || !hasID || !hasOK {
		return r, fmt.Errorf("%w: v, id and ok are required", ErrBadResponse)
	}
	return r, r.Validate()
}

// Decode decodes an OK response's result into v, strictly: an unknown field is an error.
func (r Response) Decode(v any) error {
	if !r.OK {
		return fmt.Errorf("decode result: %w: %s", ErrBadResponse, r.Error)
	}
	dec := json.NewDecoder(bytes.NewReader(r.Result))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode result: %w", err)
	}
	return nil
}

// decodeObject walks the top-level members of the single JSON object in line, in order, and
// hands each to field. Keys must be unique; nothing but whitespace may follow the object.
// encoding/json alone would match keys case-insensitively and let a repeated key win.
func decodeObject(line []byte, field func(key string, raw json.RawMessage) error) error {
	dec := json.NewDecoder(bytes.NewReader(line))
	tok, err := dec.Token()
	if err != nil {
		return syntaxError(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("%w: not a JSON object", ErrSyntax)
	}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return syntaxError(err)
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("%w: object key is not a string", ErrSyntax)
		}
		if seen[key] {
			return fmt.Errorf("%w %q", ErrDuplicateField, shorten(key))
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return syntaxError(err)
		}
		if err := field(key, raw); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return syntaxError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: data after the object", ErrSyntax)
	}
	return nil
}

// unmarshalField decodes one member; JSON null is refused, where encoding/json would leave the
// zero value and so fake a present field.
func unmarshalField(key string, raw json.RawMessage, v any) error {
	if bytes.Equal(raw, []byte("null")) {
		return fmt.Errorf("%w: field %q is null", ErrSyntax, key)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: field %q: %w", ErrSyntax, key, err)
	}
	return nil
}

// unmarshalStrict decodes one member that is an object, refusing unknown fields in it.
func unmarshalStrict(key string, raw json.RawMessage, v any) error {
	if bytes.Equal(raw, []byte("null")) {
		return fmt.Errorf("%w: field %q is null", ErrSyntax, key)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: field %q: %w", ErrSyntax, key, err)
	}
	return nil
}

func syntaxError(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %w", ErrSyntax, err)
}

// marshalLine encodes v as one line. HTML escaping is off so that a log line with < or & does
// not grow sixfold and the size bounds hold.
func marshalLine(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // Encode ends the line with \n
		return nil, fmt.Errorf("encode line: %w", err)
	}
	return b.Bytes(), nil
}

// shorten bounds an attacker-chosen string quoted back in an error message.
func shorten(s string) string {
	return truncate(s, maxShownKey)
}

// truncate cuts s to at most n bytes on a UTF-8 boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// StatusInfo is the result of status.
type StatusInfo struct {
	// Spine and Version name the running Spine; Slot is the slot it booted from, "a" or "b".
	Spine   string `json:"spine"`
	Version uint64 `json:"version"`
	Slot    string `json:"slot"`
	// MinVersion is the boot-control record's anti-rollback floor.
	MinVersion uint64 `json:"min_version"`
	// Slots describes both slots, A then B.
	Slots []SlotInfo `json:"slots"`
	// Kernel is the kernel the machine runs.
	Kernel KernelInfo `json:"kernel"`
	// UptimeMS is the time since the kernel started, in milliseconds.
	UptimeMS uint64 `json:"uptime_ms"`
	// PersistMounted says whether /persist is mounted.
	PersistMounted bool `json:"persist_mounted"`
	// Watchdog is the hardware watchdog's state.
	Watchdog WatchdogInfo `json:"watchdog"`
	// LastReset says why the machine last went down, as kept in the boot-control record.
	LastReset string `json:"last_reset"`
	// Denied lists the system calls personas' filters refused since boot, one line per
	// persona: "persona web: denied syscall accept4 (288), 3 times".
	Denied []string `json:"denied,omitempty"`
	// Committed says whether this boot's Spine is committed; Missing lists what keeps it
	// from committing (a trial reverts when its deadline passes with anything missing).
	Committed bool     `json:"committed"`
	Missing   []string `json:"missing,omitempty"`
	// RSSKiB is bay0's resident set size in KiB, as it is now (no forced free).
	RSSKiB int64 `json:"rss_kib,omitempty"`
	// Boot is the boot's timeline: each phase of stage 1 and the governor with its duration.
	Boot []BootPhase `json:"boot,omitempty"`
	// Personas is every persona as the personas verb describes it, in policy order.
	Personas []PersonaInfo `json:"personas,omitempty"`
}

// BootPhase is one named phase of the boot and how long it took.
type BootPhase struct {
	Name string `json:"name"`
	MS   int64  `json:"ms"`
}

// KernelInfo describes the running kernel.
type KernelInfo struct {
	// Release and Version are what uname -r and uname -v print.
	Release string `json:"release"`
	Version string `json:"version"`
	// SHA256 is the hash of the kernel image that stage 0 checked against the running slot's
	// signed manifest before it started it: the slot's own kernel. Empty when the kernel did
	// not come from the slot (a direct boot, where the host handed QEMU the kernel).
	SHA256 string `json:"sha256,omitempty"`
}

// SlotInfo is what the boot-control record says about one slot.
type SlotInfo struct {
	Slot      string `json:"slot"`
	State     string `json:"state"`
	Version   uint64 `json:"version"`
	TriesLeft uint8  `json:"tries_left"`
	Reason    string `json:"reason"`
}

// WatchdogInfo is the hardware watchdog's state.
type WatchdogInfo struct {
	Enabled   bool   `json:"enabled"`
	TimeoutMS uint64 `json:"timeout_ms"`
	// SinceFeedMS is the time since the last feed when the answer was made, in
	// milliseconds; absent before the first feed.
	SinceFeedMS *uint64 `json:"since_feed_ms,omitempty"`
}

// PersonaInfo is one persona in the result of personas.
type PersonaInfo struct {
	Name string `json:"name"`
	// State is the supervisor's word for it: starting, running, healthy (its health check
	// passed), backing-off (ended, restarted after a delay), stopped, exited or refused.
	State string `json:"state"`
	// PID is the persona's init in the governor's PID namespace, 0 when not running.
	PID      int    `json:"pid"`
	Restarts uint64 `json:"restarts"`
	Limits   Limits `json:"limits"`
	// LastExit says how the previous instance ended, empty if none did.
	LastExit string `json:"last_exit"`
	// Denied lists the system calls the persona's filter refused since boot, with counts.
	Denied []string `json:"denied,omitempty"`
	// Health is the last health check's outcome: absent without a check, "ok", or why it
	// failed.
	Health string `json:"health,omitempty"`
	// HealthOutput is the tail of the last exec health check's output, on one line.
	HealthOutput string `json:"health_output,omitempty"`
	// CPUUsec is the running instance's CPU time (its cgroup's cpu.stat usage_usec),
	// CPUPercent its use over the last second in percent of one core, MemoryBytes its
	// cgroup's memory.current; all absent when it is not running.
	CPUUsec     int64   `json:"cpu_usec,omitempty"`
	CPUPercent  float64 `json:"cpu_percent,omitempty"`
	MemoryBytes int64   `json:"memory_bytes,omitempty"`
}

// Limits are a persona's cgroup limits, as written to the cgroup files.
type Limits struct {
	CPUMax    string `json:"cpu.max"`
	MemoryMax string `json:"memory.max"`
	PidsMax   string `json:"pids.max"`
}

// PersonasResult is the result of personas.
type PersonasResult struct {
	Personas []PersonaInfo `json:"personas"`
}

// LogsResult is the result of logs: the recent lines of bay0, or of the persona named, oldest
// first. Every line kept has a sequence number, counted from 1 since boot (a persona's lines
// kept in /persist from earlier boots included): Lines are First..Next, and Next is the After of
// the next request that wants only newer lines. First above the request's After+1 means lines
// were pushed out of the ring before they were asked for.
type LogsResult struct {
	Lines []string `json:"lines"`
	First uint64   `json:"first"`
	Next  uint64   `json:"next"`
}

// Done is the result of replace, stop, start, reboot and poweroff: an empty object.
type Done struct{}

// UpdateResult is the final answer to an update that was staged.
type UpdateResult struct {
	Name    string `json:"name"`
	Version uint64 `json:"version"`
	Slot    string `json:"slot"`
	Bytes   int64  `json:"bytes"`
	// WriteMS and VerifyMS split the time bay0 spent: streaming and writing, then reading the
	// slot back and checking every block.
	WriteMS  uint64 `json:"write_ms"`
	VerifyMS uint64 `json:"verify_ms"`
}
