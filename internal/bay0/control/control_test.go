package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"alpinespine.org/spine/internal/bay0/update"
)

func TestDecodeRequestValid(t *testing.T) {
	for _, tc := range []struct {
		line string
		want Request
	}{
		{`{"v":1,"id":1,"verb":"status"}`, Request{V: 1, ID: 1, Verb: VerbStatus}},
		{`{"v":1,"id":2,"verb":"personas"}`, Request{V: 1, ID: 2, Verb: VerbPersonas}},
		{`{"v":1,"id":3,"verb":"logs"}`, Request{V: 1, ID: 3, Verb: VerbLogs}},
		{`{"v":1,"id":4,"verb":"replace","name":"web"}`, Request{V: 1, ID: 4, Verb: VerbReplace, Name: "web"}},
		{`{"v":1,"id":5,"verb":"stop","name":"db-2"}`, Request{V: 1, ID: 5, Verb: VerbStop, Name: "db-2"}},
		{`{"v":1,"id":6,"verb":"start","name":"a"}`, Request{V: 1, ID: 6, Verb: VerbStart, Name: "a"}},
		{`{"v":1,"id":7,"verb":"reboot"}`, Request{V: 1, ID: 7, Verb: VerbReboot}},
		{`{"v":1,"id":8,"verb":"poweroff"}`, Request{V: 1, ID: 8, Verb: VerbPoweroff}},
		{`{"v":1,"id":9,"verb":"update","offer":{"footer":"AQ==","manifest":"Ag==","signature":"Aw=="},"size":7}`,
			Request{V: 1, ID: 9, Verb: VerbUpdate, Offer: &update.Offer{Footer: []byte{1}, Manifest: []byte{2}, Signature: []byte{3}}, Size: 7}},
		// Any field order, JSON whitespace, a terminal's \r, id 0 and the largest id.
		{" {\"verb\" : \"status\", \"id\":0, \"v\":1}\r", Request{V: 1, Verb: VerbStatus}},
		{`{"v":1,"id":18446744073709551615,"verb":"logs"}`, Request{V: 1, ID: 1<<64 - 1, Verb: VerbLogs}},
		{`{"v":1,"id":1,"verb":"stop","name":"\u0077eb"}`, Request{V: 1, ID: 1, Verb: VerbStop, Name: "web"}},
	} {
		got, err := DecodeRequest([]byte(tc.line))
		if err != nil {
			t.Errorf("DecodeRequest(%s): %v", tc.line, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("DecodeRequest(%s) = %+v, want %+v", tc.line, got, tc.want)
		}
	}
}

func TestDecodeRequestInvalid(t *testing.T) {
	long := `{"v":1,"id":1,"verb":"status"}` + strings.Repeat(" ", MaxRequestLine)
	for _, tc := range []struct {
		line string
		want error
	}{
		{``, ErrSyntax},
		{`   `, ErrSyntax},
		{`{`, ErrSyntax},
		{`{"v":1,"id":1,"verb":"status"`, ErrSyntax},
		{`[1,2]`, ErrSyntax},
		{`"status"`, ErrSyntax},
		{`null`, ErrSyntax},
		{`{"v":1,"id":1,"verb":"status"}{"v":1}`, ErrSyntax},
		{`{"v":1,"id":1,"verb":"status"} x`, ErrSyntax},
		{`{"v":1,"id":1,"verb":"status",}`, ErrSyntax},
		{`{"v":"1","id":1,"verb":"status"}`, ErrSyntax},
		{`{"v":1.0,"id":1,"verb":"status"}`, ErrSyntax},
		{`{"v":1,"id":-1,"verb":"status"}`, ErrSyntax},
		{`{"v":1,"id":1e3,"verb":"status"}`, ErrSyntax},
		{`{"v":1,"id":18446744073709551616,"verb":"status"}`, ErrSyntax},
		{`{"v":null,"id":1,"verb":"status"}`, ErrSyntax},
		{`{"v":1,"id":1,"verb":null}`, ErrSyntax},
		{`{"v":1,"id":1,"verb":["status"]}`, ErrSyntax},
		{`{"v":1,"id":1,"verb":"stop","name":null}`, ErrSyntax},
		{`{"v":1,"id":1,"verb":"stop","name":7}`, ErrSyntax},
		{`{"v":2,"id":1,"verb":"status"}`, ErrVersion},
		{`{"v":0,"id":1,"verb":"status"}`, ErrVersion},
		{`{"id":1,"verb":"status"}`, ErrMissingField},
		{`{"v":1,"verb":"status"}`, ErrMissingField},
		{`{"v":1,"id":1}`, ErrMissingField},
		{`{}`, ErrMissingField},
		{`{"v":1,"id":1,"verb":"stop"}`, ErrMissingField},
		{`{"v":1,"id":1,"verb":"stop","name":""}`, ErrMissingField},
		{`{"v":1,"id":1,"verb":"status","name":"web"}`, ErrUnexpectedField},
		{`{"v":1,"id":1,"verb":"status","name":""}`, ErrUnexpectedField},
		{`{"v":1,"id":1,"verb":"reboot","name":"now"}`, ErrUnexpectedField},
		{`{"v":1,"id":1,"verb":"status","cmd":"/bin/sh"}`, ErrUnknownField},
		{`{"v":1,"id":1,"Verb":"status"}`, ErrUnknownField},
		{`{"V":1,"id":1,"verb":"status"}`, ErrUnknownField},
		{`{"v":1,"id":1,"verb":"status","args":[]}`, ErrUnknownField},
		{`{"v":1,"id":1,"verb":"status","verb":"reboot"}`, ErrDuplicateField},
		{`{"v":1,"id":1,"id":2,"verb":"status"}`, ErrDuplicateField},
		{`{"v":1,"id":1,"verb":"exec"}`, ErrUnknownVerb},
		{`{"v":1,"id":1,"verb":"STATUS"}`, ErrUnknownVerb},
		{`{"v":1,"id":1,"verb":"stop","name":"Web"}`, ErrBadName},
		{`{"v":1,"id":1,"verb":"stop","name":"../x"}`, ErrBadName},
		{`{"v":1,"id":1,"verb":"stop","name":"-web"}`, ErrBadName},
		{`{"v":1,"id":1,"verb":"stop","name":"web x"}`, ErrBadName},
		{`{"v":1,"id":1,"verb":"stop","name":"` + strings.Repeat("a", maxName+1) + `"}`, ErrBadName},
		{long, ErrTooLong},
	} {
		_, err := DecodeRequest([]byte(tc.line))
		if !errors.Is(err, tc.want) {
			t.Errorf("DecodeRequest(%.80s) = %v, want %v", tc.line, err, tc.want)
		}
	}
}

// TestDecodeRequestKeepsID: a bad request's id is still echoed when it was read.
func TestDecodeRequestKeepsID(t *testing.T) {
	r, err := DecodeRequest([]byte(`{"v":1,"id":42,"verb":"exec"}`))
	if err == nil || r.ID != 42 {
		t.Errorf("DecodeRequest = %+v, %v; want ID 42 and an error", r, err)
	}
}

// TestLongestRequest: a request of exactly MaxRequestLine bytes is accepted.
func TestLongestRequest(t *testing.T) {
	base := `{"v":1,"id":1,"verb":"status"}`
	line := base + strings.Repeat(" ", MaxRequestLine-len(base))
	if _, err := DecodeRequest([]byte(line)); err != nil {
		t.Errorf("request of %d bytes: %v", len(line), err)
	}
}

func TestEncodeRequest(t *testing.T) {
	b, err := EncodeRequest(Request{V: Version, ID: 3, Verb: VerbStop, Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"v":1,"id":3,"verb":"stop","name":"web"}` + "\n"; string(b) != want {
		t.Errorf("EncodeRequest = %q, want %q", b, want)
	}
	b, err = EncodeRequest(Request{V: Version, ID: 4, Verb: VerbStatus})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"v":1,"id":4,"verb":"status"}` + "\n"; string(b) != want {
		t.Errorf("EncodeRequest = %q, want %q", b, want)
	}
	for _, bad := range []Request{
		{V: 2, Verb: VerbStatus},
		{V: 1, Verb: "exec"},
		{V: 1, Verb: VerbStop},
		{V: 1, Verb: VerbStatus, Name: "web"},
		{V: 1, Verb: VerbStart, Name: "WEB"},
	} {
		if _, err := EncodeRequest(bad); err == nil {
			t.Errorf("EncodeRequest(%+v) succeeded", bad)
		}
	}
}

// TestLogsRequest: logs takes a persona name or none, and an after; no other verb takes after,
// and the name follows the persona name rule.
func TestLogsRequest(t *testing.T) {
	for _, line := range []string{
		`{"v":1,"id":1,"verb":"logs"}`,
		`{"v":1,"id":1,"verb":"logs","name":"web"}`,
		`{"v":1,"id":1,"verb":"logs","name":"web","after":18446744073709551615}`,
	} {
		if _, err := DecodeRequest([]byte(line)); err != nil {
			t.Errorf("%s: %v", line, err)
		}
	}
	for line, want := range map[string]error{
		`{"v":1,"id":1,"verb":"status","after":3}`:            ErrUnexpectedField,
		`{"v":1,"id":1,"verb":"stop","name":"web","after":3}`: ErrUnexpectedField,
		`{"v":1,"id":1,"verb":"logs","name":"../etc"}`:        ErrBadName,
		`{"v":1,"id":1,"verb":"logs","after":-1}`:             ErrSyntax,
		`{"v":1,"id":1,"verb":"logs","after":null}`:           ErrSyntax,
	} {
		if _, err := DecodeRequest([]byte(line)); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", line, err, want)
		}
	}
	if !VerbLogs.MayTakeName() || VerbLogs.TakesName() || VerbStatus.MayTakeName() || !VerbStop.MayTakeName() {
		t.Error("name rules of logs, status and stop are wrong")
	}
}

// TestRequestRoundTrip: every verb encodes and decodes to itself.
func TestRequestRoundTrip(t *testing.T) {
	for i, v := range Verbs() {
		r := Request{V: Version, ID: uint64(i) + 1, Verb: v}
		if v.TakesName() {
			r.Name = "persona-" + fmt.Sprint(i)
		}
		if v == VerbUpdate {
			r.Offer, r.Size = &update.Offer{Footer: []byte{1}, Manifest: []byte("m"), Signature: []byte{2}}, 4096
		}
		b, err := EncodeRequest(r)
		if err != nil {
			t.Fatalf("EncodeRequest(%+v): %v", r, err)
		}
		got, err := DecodeRequest(bytes.TrimSuffix(b, []byte("\n")))
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Errorf("round trip of %+v = %+v, %v", r, got, err)
		}
	}
}

// TestVerbSetIsClosed: the decoder knows exactly the nine verbs; nothing that could run a
// command, open a shell, touch a file or change policy is a verb, whatever its spelling.
func TestVerbSetIsClosed(t *testing.T) {
	want := []Verb{"status", "personas", "logs", "replace", "stop", "start", "reboot", "poweroff", "update"}
	if !slices.Equal(Verbs(), want) {
		t.Fatalf("Verbs() = %v, want %v", Verbs(), want)
	}
	for _, v := range refusedVerbs() {
		_, err := DecodeRequest([]byte(`{"v":1,"id":1,"verb":` + jsonString(v) + `}`))
		if !errors.Is(err, ErrUnknownVerb) {
			t.Errorf("verb %q: %v, want %v", v, err, ErrUnknownVerb)
		}
		_, err = DecodeRequest([]byte(`{"v":1,"id":1,"verb":` + jsonString(v) + `,"name":"web"}`))
		if !errors.Is(err, ErrUnknownVerb) {
			t.Errorf("verb %q with a name: %v, want %v", v, err, ErrUnknownVerb)
		}
	}
}

// refusedVerbs are verbs a control channel must not have, and near misses of the real ones.
func refusedVerbs() []string {
	return []string{
		"", "exec", "run", "shell", "sh", "bash", "system", "spawn", "cmd", "command", "eval",
		"debug", "attach", "console", "login", "su", "sudo", "kill", "signal", "ptrace",
		"read", "write", "cat", "get", "put", "upload", "download", "file", "open", "cp", "rm",
		"mount", "umount", "chmod", "chown", "insmod", "modprobe", "sysctl", "setenv",
		"policy", "set-policy", "config", "set", "reload", "load", "persona-init", "launch",
		"Status", "STATUS", " status", "status ", "status\n", "stat", "statuses", "personas!",
		"stop;sh", "start sh", "reboot -f", "update2", "updates", "status\x00", "st\u0430tus",
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestResponseRoundTrip(t *testing.T) {
	for _, r := range []Response{
		{V: Version, ID: 1, OK: true, Result: json.RawMessage(`{}`)},
		{V: Version, ID: 2, OK: true, Result: json.RawMessage(`{"lines":["a<b>&c","\"q\""]}`)},
		{V: Version, ID: 0, Error: "unknown verb \"exec\""},
	} {
		b, err := EncodeResponse(r)
		if err != nil {
			t.Fatalf("EncodeResponse(%+v): %v", r, err)
		}
		got, err := DecodeResponse(bytes.TrimSuffix(b, []byte("\n")))
		if err != nil {
			t.Fatalf("DecodeResponse(%s): %v", b, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("round trip of %+v = %+v", r, got)
		}
	}
	// The HTML-safe escapes of encoding/json would make log lines grow sixfold.
	b, _ := EncodeResponse(Response{V: Version, ID: 2, OK: true, Result: json.RawMessage(`{"s":"<&>"}`)})
	if want := `{"v":1,"id":2,"ok":true,"result":{"s":"<&>"}}` + "\n"; string(b) != want {
		t.Errorf("EncodeResponse = %s, want %s", b, want)
	}
}

func TestDecodeResponseInvalid(t *testing.T) {
	for _, line := range []string{
		`{"v":1,"id":1,"ok":true}`,
		`{"v":1,"id":1,"ok":true,"result":[]}`,
		`{"v":1,"id":1,"ok":true,"result":null}`,
		`{"v":1,"id":1,"ok":true,"result":{},"error":"x"}`,
		`{"v":1,"id":1,"ok":false}`,
		`{"v":1,"id":1,"ok":false,"error":""}`,
		`{"v":1,"id":1,"ok":false,"error":"x","result":{}}`,
		`{"v":2,"id":1,"ok":true,"result":{}}`,
		`{"id":1,"ok":true,"result":{}}`,
		`{"v":1,"ok":true,"result":{}}`,
		`{"v":1,"id":1,"result":{}}`,
		`{"v":1,"id":1,"ok":true,"result":{},"extra":1}`,
		`{"v":1,"id":1,"ok":true,"ok":true,"result":{}}`,
		`{"v":1,"id":1,"ok":"yes","result":{}}`,
		`garbage`,
	} {
		if r, err := DecodeResponse([]byte(line)); err == nil {
			t.Errorf("DecodeResponse(%s) = %+v, want an error", line, r)
		}
	}
}

func TestResponseDecodeStrict(t *testing.T) {
	r := Response{V: Version, OK: true, Result: json.RawMessage(`{"lines":["x"],"secret":1}`)}
	var l LogsResult
	if err := r.Decode(&l); err == nil {
		t.Error("Decode accepted an unknown result field")
	}
}

// FuzzDecodeRequest: whatever decodes, encodes to a line that decodes to the same request
// and encodes to the same bytes.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"id":1,"verb":"status"}`,
		`{"v":1,"id":4,"verb":"replace","name":"web"}`,
		`{"v":1,"id":1,"verb":"exec","name":"/bin/sh"}`,
		`{"v":1,"id":5,"verb":"logs","name":"web","after":42}`,
		`{"v":1,"id":6,"verb":"logs","after":7}`,
		`{"v":1,"id":7,"verb":"status","after":7}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := DecodeRequest(line)
		if err != nil {
			return
		}
		b, err := EncodeRequest(r)
		if err != nil {
			t.Fatalf("decoded %+v from %q but cannot encode it: %v", r, line, err)
		}
		if len(b)-1 > MaxRequestLine {
			t.Fatalf("encoding of %+v is %d bytes", r, len(b))
		}
		r2, err := DecodeRequest(bytes.TrimSuffix(b, []byte("\n")))
		if err != nil || !reflect.DeepEqual(r2, r) {
			t.Fatalf("re-decode of %s = %+v, %v; want %+v", b, r2, err, r)
		}
		b2, _ := EncodeRequest(r2)
		if !bytes.Equal(b, b2) {
			t.Fatalf("encodings differ: %s and %s", b, b2)
		}
		if known, _ := spec(r.Verb); !known {
			t.Fatalf("decoded unknown verb %q", r.Verb)
		}
	})
}

// FuzzDecodeResponse: the client's decoder round-trips what it accepts.
func FuzzDecodeResponse(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"id":1,"ok":true,"result":{}}`,
		`{"v":1,"id":2,"ok":true,"result":{"lines":["a","b"]}}`,
		`{"v":1,"id":0,"ok":false,"error":"unknown verb"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := DecodeResponse(line)
		if err != nil {
			return
		}
		b, err := EncodeResponse(r)
		if err != nil {
			t.Fatalf("decoded %+v from %q but cannot encode it: %v", r, line, err)
		}
		r2, err := DecodeResponse(bytes.TrimSuffix(b, []byte("\n")))
		if err != nil {
			t.Fatalf("re-decode of %s: %v", b, err)
		}
		b2, err := EncodeResponse(r2)
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("encodings differ: %s and %s (%v)", b, b2, err)
		}
	})
}
