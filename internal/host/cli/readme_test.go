package cli

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestReadmeCLIReference keeps the README's CLI reference generated from the CLI itself.
func TestReadmeCLIReference(t *testing.T) {
	b, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- cli:begin -->\n")
	got, _, ok2 := strings.Cut(rest, "<!-- cli:end -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no <!-- cli:begin --> ... <!-- cli:end --> section")
	}
	var want bytes.Buffer
	writeReference(&want)
	if strings.TrimSpace(got) != strings.TrimSpace(want.String()) {
		t.Fatal("README.md's CLI reference is stale: run scripts/readme-cli.sh")
	}
}
