package courier

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseRef(t *testing.T) {
	r, err := ParseRef("oci://10.0.2.2:5000/spines/demo@" + digest)
	if err != nil {
		t.Fatal(err)
	}
	if r.Registry != "10.0.2.2:5000" || r.Repository != "spines/demo" || r.Digest != digest {
		t.Fatalf("%+v", r)
	}
	if r.String() != "oci://10.0.2.2:5000/spines/demo@"+digest {
		t.Fatalf("String() = %s", r)
	}
	for s, want := range map[string]string{
		"10.0.2.2:5000/spines/demo@" + digest:         "want oci://",
		"oci://registry.example/spines/demo:v2":       "names no digest",
		"oci://registry.example/spines/demo@sha256:1": "64 lower-case hex",
		"oci://spines@" + digest:                      "no registry host",
		"oci://Registry/x@" + digest:                  "no registry host",
		"oci://registry.example/Spines@" + digest:     "not a valid OCI repository",
		"oci://registry.example/a//b@" + digest:       "not a valid OCI repository",
		"oci://registry.example/a/../b@" + digest:     "not a valid OCI repository",
	} {
		if _, err := ParseRef(s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRef(%q) = %v, want an error containing %q", s, err, want)
		}
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	var b bytes.Buffer
	h := Header{Manifest: []byte(`{"a":1}`), Tail: []byte{1, 2, 3}}
	if err := WriteHeader(&b, h); err != nil {
		t.Fatal(err)
	}
	b.WriteString("body")
	got, err := ReadHeader(&b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Manifest, h.Manifest) || !bytes.Equal(got.Tail, h.Tail) || b.String() != "body" {
		t.Fatalf("got %+v, rest %q", got, b.String())
	}

	b.Reset()
	if err := WriteHeader(&b, Header{Failure: "registry 10.0.2.2:5000: connection refused"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadHeader(&b); !errors.Is(err, ErrFailure) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("failure header: %v", err)
	}
}

func TestReadHeaderRefuses(t *testing.T) {
	for name, in := range map[string][]byte{
		"empty":       nil,
		"zero length": {0, 0, 0, 0},
		"too long":    {0, 0x20, 0, 0},
		"short":       {0, 0, 0, 10, '{'},
		"not json":    append([]byte{0, 0, 0, 3}, "abc"...),
		"unknown":     append([]byte{0, 0, 0, 9}, `{"x":123}`...),
		"no manifest": append([]byte{0, 0, 0, 2}, `{}`...),
		"trailing":    append([]byte{0, 0, 0, 5}, `{} {}`...),
	} {
		if _, err := ReadHeader(bytes.NewReader(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseRef(f *testing.F) {
	f.Add("oci://10.0.2.2:5000/spines/demo@" + digest)
	f.Add("oci://a/b@sha256:")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			return
		}
		again, err := ParseRef(r.String())
		if err != nil || again != r {
			t.Fatalf("%q parsed to %+v, which does not parse back (%v)", s, r, err)
		}
	})
}

func FuzzReadHeader(f *testing.F) {
	var b bytes.Buffer
	if err := WriteHeader(&b, Header{Manifest: []byte("{}"), Tail: []byte{1}}); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := ReadHeader(bytes.NewReader(in))
		if err == nil && (len(h.Manifest) == 0 || len(h.Tail) == 0 || h.Failure != "") {
			t.Fatalf("accepted an incomplete header %+v", h)
		}
	})
}
