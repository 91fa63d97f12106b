#!/usr/bin/env bash
# Static checks that CI enforces: formatting, vet, staticcheck, and the project's own rules
# (unsafe only in *_unsafe.go; PID 1 exits only through bay0's halt path).
set -euo pipefail
cd "$(dirname "$0")/.."

files=$(git ls-files -co --exclude-standard '*.go')
bad=$(gofmt -l $files)
if [ -n "$bad" ]; then echo "lint: gofmt would change:"; echo "$bad"; exit 1; fi

go vet ./...
go vet -tags e2e ./...
go vet -tags integration ./...
"$(go env GOPATH)/bin/staticcheck" ./...
"$(go env GOPATH)/bin/staticcheck" -tags integration ./...

unsafe=$(grep -l '"unsafe"' $files | grep -v '_unsafe\.go$' || true)
if [ -n "$unsafe" ]; then echo "lint: unsafe outside *_unsafe.go:"; echo "$unsafe"; exit 1; fi

# Only bay0's halt path may reboot, power off or exit the process.
exits=$(grep -nE 'unix\.Reboot\(|os\.Exit\(' $files | grep -vE '^(cmd/[a-z0-9-]+/main\.go|bench/main\.go|bench/[a-z]+/main\.go|tools/[a-z]+/main\.go|personas/[a-z]+/main\.go|internal/bay0/halt/halt_linux\.go|internal/bay0/personainit/|.*/testdata/)' | grep -v '_test\.go' || true)
if [ -n "$exits" ]; then echo "lint: os.Exit or unix.Reboot outside the exit paths:"; echo "$exits"; exit 1; fi
echo "lint: ok"
