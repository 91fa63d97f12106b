#!/usr/bin/env bash
# Runs every Go fuzz target of the repository for FUZZTIME each (default 15s).
set -euo pipefail
cd "$(dirname "$0")/.."
t=${FUZZTIME:-15s}
grep -rl --include='*_test.go' '^func Fuzz' internal bench | xargs -n1 dirname | sort -u | while read -r dir; do
  for f in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9]*\).*/\1/'); do
    echo "fuzz: ./$dir $f ($t)"
    go test -run='^$' -fuzz="^$f\$" -fuzztime="$t" "./$dir"
  done
done
