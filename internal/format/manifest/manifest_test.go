package manifest

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func sample() Manifest {
	return Manifest{
		Format:        FormatVersion,
		Name:          "demo",
		Version:       7,
		Constitution:  Constitution,
		Kernel:        "6.1.0-56-amd64",
		BuildTime:     1700000000,
		HashAlgorithm: "sha256",
		DataBlockSize: 4096,
		HashBlockSize: 4096,
		DataBlocks:    1540,
		HashOffset:    1540 * 4096,
		HashSize:      61440,
		Salt:          "15a6bcfb962bd7bac68c70a9f67ec9ea2581daa51671fa832adba9aa9f59ceb3",
		UUID:          "937c7676-ca5f-402d-9dd1-a7ee8346f19b",
		RootHash:      "a915d3a2bd8aad3b0cd4eccef215d9d889e4e66a0668f6bf5c0bacd64ae8d808",
		Personas:      []string{"heartbeat", "web"},
	}
}

// canonical is sample() as Marshal must write it: the signed bytes. A change here breaks
// every signature made before, so it must be deliberate.
const canonical = `{"format":1,"name":"demo","version":7,"constitution":"0.1","kernel":"6.1.0-56-amd64","build_time":1700000000,` +
	`"hash_algorithm":"sha256","data_block_size":4096,"hash_block_size":4096,"data_blocks":1540,"hash_offset":6307840,"hash_size":61440,` +
	`"salt":"15a6bcfb962bd7bac68c70a9f67ec9ea2581daa51671fa832adba9aa9f59ceb3","uuid":"937c7676-ca5f-402d-9dd1-a7ee8346f19b",` +
	`"root_hash":"a915d3a2bd8aad3b0cd4eccef215d9d889e4e66a0668f6bf5c0bacd64ae8d808","personas":["heartbeat","web"]}`

func TestMarshalCanonical(t *testing.T) {
	b, err := sample().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != canonical {
		t.Fatalf("Marshal =\n%s\nwant\n%s", b, canonical)
	}
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, sample()) {
		t.Errorf("Parse(Marshal(m)) = %+v, want %+v", m, sample())
	}
}

func TestSources(t *testing.T) {
	m := sample()
	m.Sources = []Source{{Persona: "web", Kind: "oci", Ref: "sha256:<&>"}}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"sources":[{"persona":"web","kind":"oci","ref":"sha256:<&>"}]`)) {
		t.Errorf("sources not rendered verbatim (no HTML escaping): %s", b)
	}
	got, err := Parse(b)
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Errorf("Parse = %+v, %v", got, err)
	}
}

// TestKernelSHA256: a Spine that carries its kernel names the image's hash in the signed bytes,
// right after the release; a malformed hash is refused.
func TestKernelSHA256(t *testing.T) {
	m := sample()
	m.KernelSHA256 = strings.Repeat("ab", 32)
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"kernel":"6.1.0-56-amd64","kernel_sha256":"`+m.KernelSHA256+`","build_time"`)) {
		t.Errorf("kernel_sha256 not where expected: %s", b)
	}
	if got, err := Parse(b); err != nil || !reflect.DeepEqual(got, m) {
		t.Errorf("Parse = %+v, %v", got, err)
	}
	for _, bad := range []string{"AB", strings.Repeat("AB", 32), strings.Repeat("a", 63), strings.Repeat("g", 64)} {
		m.KernelSHA256 = bad
		if _, err := m.Marshal(); err == nil || !strings.Contains(err.Error(), "kernel_sha256") {
			t.Errorf("kernel_sha256 %q: %v", bad, err)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	swap := func(old, new string) []byte {
		if !strings.Contains(canonical, old) {
			t.Fatalf("canonical has no %q", old)
		}
		return []byte(strings.Replace(canonical, old, new, 1))
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "decode"},
		{"not json", []byte("hello"), "decode"},
		{"unknown field", swap(`"format":1,`, `"format":1,"extra":1,`), "unknown field"},
		{"trailing data", []byte(canonical + `{}`), "trailing"},
		{"trailing newline", []byte(canonical + "\n"), "canonical"},
		{"whitespace", swap(`"format":1,`, `"format": 1,`), "canonical"},
		{"key case", swap(`"name":"demo"`, `"NAME":"demo"`), "canonical"},
		{"repeated key", swap(`"name":"demo",`, `"name":"evil","name":"demo",`), "canonical"},
		{"key order", swap(`"format":1,"name":"demo",`, `"name":"demo","format":1,`), "canonical"},
		{"escaped", swap(`"kernel":"6.1.0-56-amd64"`, `"kernel":"6.1.0-56-amd\u0036\u0034"`), "canonical"},
		{"empty sources", swap(`]}`, `],"sources":[]}`), "canonical"},
		{"format", swap(`"format":1`, `"format":2`), "format"},
		{"name", swap(`"name":"demo"`, `"name":"Demo"`), "name"},
		{"version", swap(`"version":7`, `"version":0`), "version"},
		{"negative version", swap(`"version":7`, `"version":-1`), "decode"},
		{"constitution", swap(`"constitution":"0.1"`, `"constitution":""`), "constitution"},
		{"algorithm", swap(`"sha256"`, `"sha512"`), "hash_algorithm"},
		{"block size", swap(`"data_block_size":4096`, `"data_block_size":512`), "block sizes"},
		{"no data", swap(`"data_blocks":1540`, `"data_blocks":0`), "data_blocks"},
		{"huge data", swap(`"data_blocks":1540`, `"data_blocks":268435457`), "data_blocks"},
		{"hash offset", swap(`"hash_offset":6307840`, `"hash_offset":6307841`), "hash_offset"},
		{"hash size", swap(`"hash_size":61440`, `"hash_size":61441`), "hash_size"},
		{"no hash", swap(`"hash_size":61440`, `"hash_size":0`), "hash_size"},
		{"short root", swap(`"root_hash":"a9`, `"root_hash":"`), "root_hash"},
		{"upper root", swap(`"root_hash":"a9`, `"root_hash":"A9`), "root_hash"},
		{"odd salt", swap(`"salt":"15`, `"salt":"1`), "salt"},
		{"uuid", swap(`"uuid":"937c7676-`, `"uuid":"937c7676`), "uuid"},
		{"persona name", swap(`"heartbeat"`, `"../etc"`), "persona name"},
		{"too large", append([]byte(canonical), bytes.Repeat([]byte(" "), MaxSize)...), "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.in)
			if err == nil {
				t.Fatalf("Parse accepted %s", tc.in)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	if _, err := Parse(swap(`"format":1,`, `"format": 1,`)); !errors.Is(err, ErrNotCanonical) {
		t.Errorf("whitespace: error %v is not ErrNotCanonical", err)
	}
}

func TestMarshalValidates(t *testing.T) {
	m := sample()
	m.RootHash = "nothex"
	if _, err := m.Marshal(); err == nil {
		t.Error("Marshal signed an invalid manifest")
	}
}

func TestBytesHelpers(t *testing.T) {
	m := sample()
	if got := hex.EncodeToString(m.RootHashBytes()); got != m.RootHash {
		t.Errorf("RootHashBytes = %s", got)
	}
	if got := hex.EncodeToString(m.SaltBytes()); got != m.Salt {
		t.Errorf("SaltBytes = %s", got)
	}
	u := m.UUIDBytes()
	if got := hex.EncodeToString(u[:]); got != "937c7676ca5f402d9dd1a7ee8346f19b" {
		t.Errorf("UUIDBytes = %s", got)
	}
	if got := FormatUUID(u); got != m.UUID {
		t.Errorf("FormatUUID(UUIDBytes) = %s, want %s", got, m.UUID)
	}
}

// FuzzParse feeds arbitrary bytes to Parse. Whatever it accepts must be canonical: Marshal
// gives back the very bytes, which parse to the same manifest.
func FuzzParse(f *testing.F) {
	f.Add([]byte(canonical))
	m := sample()
	m.Sources = []Source{{Persona: "web", Kind: "deb", Ref: "nginx=1.22"}}
	m.Personas = nil
	b, err := m.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			return
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed manifest: %v", err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("Parse accepted non-canonical bytes:\n in  %q\n out %q", data, out)
		}
		m2, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal(m)): %v", err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the manifest:\n%+v\n%+v", m, m2)
		}
	})
}
