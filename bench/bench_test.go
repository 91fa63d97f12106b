//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestBenchmarksQuick runs every benchmark once in quick mode, so that a benchmark that no
// longer builds, boots or parses its guest's lines fails the integration tests rather than the
// next `make bench`. The ratios of a quick run mean little; what it checks is that every row
// is there, measured and explained, and that the JSON says the same.
func TestBenchmarksQuick(t *testing.T) {
	// The benchmarks build ./cmd/bay0 and read demo/spine.toml from the module's root.
	t.Chdir("..")
	var out bytes.Buffer
	rows, err := run(context.Background(), &out, true, nil)
	t.Logf("quick run:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "bench.json")
	if err := writeJSON(path, rows); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(rows) {
		t.Fatalf("JSON has %d rows, the run %d", len(got), len(rows))
	}
	var names []string
	for _, r := range got {
		name, _ := r["name"].(string)
		names = append(names, name)
		if r["reference"] == "" || r["conditions"] == "" || !(r["ratio"].(float64) > 0) {
			t.Errorf("row %s lacks a reference, conditions or ratio: %v", name, r)
		}
		_, kib := r["ours_kib"]
		ours, _ := r["ours_ms"].(float64)
		ref, _ := r["reference_ms"].(float64)
		if !kib && (ours <= 0 || ref <= 0) {
			t.Errorf("row %s has no time on one side: %v", name, r)
		}
	}
	for _, want := range []string{"verity-tree", "verity-tree-1thread", "verity-tree-sha256-limit",
		"persona-start-host", "persona-start-host-floor", "persona-start-guest", "persona-start-guest-floor",
		"boot-to-personas", "boot-to-personas-debian", "boot-spine-vs-debian-kernel", "boot-firmware-vs-direct", "bay0-rss-after-free", "bay0-rss-steady", "update-staging", "update-staging-vs-dd-readback", "update-staging-online", "update-courier", "update-courier-vs-dd"} {
		if !slices.Contains(names, want) {
			t.Errorf("no row %s (rows: %v)", want, names)
		}
		if !bytes.Contains(out.Bytes(), []byte("| "+want+" |")) {
			t.Errorf("row %s not printed", want)
		}
	}
}
