package main

import "testing"

// TestReadmeMapIsCurrent keeps the README's package map generated from the code: a package
// added, moved or re-documented without scripts/readme-cli.sh fails here.
func TestReadmeMapIsCurrent(t *testing.T) {
	if err := run("../../README.md", ""); err != nil {
		t.Fatal(err)
	}
}
