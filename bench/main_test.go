package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
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
