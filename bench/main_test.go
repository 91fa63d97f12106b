package main

import (
	"crypto/ed25519"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"alpinespine.org/spine/internal/format/keys"
)

// TestJSONRows pins the JSON names the issue promises readers of --json FILE, and checks that
// the file holds the rows as they were.
func TestJSONRows(t *testing.T) {
	r := timed("persona-start-host", 12*time.Millisecond, "crun run", 18*time.Millisecond, "host")
	path := filepath.Join(t.TempDir(), "rows.json")
	if err := writeJSON(path, []result{r}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var raw []map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"name": "persona-start-host", "ours_ms": 12.0, "reference": "crun run", "reference_ms": 18.0,
		"ratio": 1.5, "conditions": "host"}
	if !reflect.DeepEqual(raw, []map[string]any{want}) {
		t.Errorf("JSON %s, want %v", b, want)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}
}

// TestBenchmarkNames pins the names `go run ./bench NAME` takes, in the order a full run runs
// them.
func TestBenchmarkNames(t *testing.T) {
	want := []string{"verity", "persona", "boot", "firmware", "update", "courier"}
	if got := benchmarkNames(); !reflect.DeepEqual(got, want) {
		t.Errorf("benchmarks %v, want %v", got, want)
	}
}

// TestFixedKeys: the benchmark's key pair is the same in every run (stage 0, which carries the
// public key, is then built once) and is a pair keys reads and verifies with.
func TestFixedKeys(t *testing.T) {
	var pubs [2][]byte
	for i := range pubs {
		dir := t.TempDir()
		if err := fixedKeys(dir); err != nil {
			t.Fatal(err)
		}
		priv, err := keys.LoadPrivate(filepath.Join(dir, keys.PrivateFile))
		if err != nil {
			t.Fatal(err)
		}
		trusted, err := keys.LoadPublic(filepath.Join(dir, keys.PublicFile))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := keys.Verify(trusted, []byte("m"), ed25519.Sign(priv, []byte("m"))); err != nil {
			t.Errorf("the public key does not verify the private key's signature: %v", err)
		}
		if pubs[i], err = os.ReadFile(filepath.Join(dir, keys.PublicFile)); err != nil {
			t.Fatal(err)
		}
	}
	if string(pubs[0]) != string(pubs[1]) {
		t.Errorf("two runs wrote different keys")
	}
}
