#!/usr/bin/env bash
# Regenerates the CLI reference in README.md from the CLI itself (spine help --markdown), and the
# package map from the packages' doc comments.
set -euo pipefail
cd "$(dirname "$0")/.."
ref=$(go run ./cmd/spine help --markdown)
awk -v ref="$ref" '
  /<!-- cli:begin -->/ { print; print ref; skip=1; next }
  /<!-- cli:end -->/   { skip=0 }
  !skip { print }
' README.md > README.md.tmp
mv README.md.tmp README.md
go run ./tools/pkgmap -write README.md
