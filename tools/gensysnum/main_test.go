package main

import (
	"bytes"
	"os"
	"testing"
)

// TestTableIsFresh: the committed table is exactly what the generator makes from the x/sys
// version in go.mod, so a module upgrade cannot leave the policy checks and seccomp with stale numbers.
func TestTableIsFresh(t *testing.T) {
	want, err := generate()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("../../internal/format/syscalls/table_amd64.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("internal/format/syscalls/table_amd64.go is stale: run go generate ./internal/format/syscalls")
	}
}
