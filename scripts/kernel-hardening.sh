#!/usr/bin/env bash
# Runs kernel-hardening-checker (https://github.com/a13xp0p0v/kernel-hardening-checker; not part
# of this repository, fetch it yourself) on Spine's kernel configuration and on Debian's generic
# 6.1 configuration, in the same run, and prints both scores and the checks Spine's kernel fails.
#   scripts/kernel-hardening.sh CHECKER_DIR [DEBIAN_CONFIG]
# DEBIAN_CONFIG defaults to the config of the Debian kernel `make bench` prepares in the cache.
set -euo pipefail
cd "$(dirname "$0")/.."
checker=${1:?usage: scripts/kernel-hardening.sh CHECKER_DIR [DEBIAN_CONFIG]}
cache=${SPINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spine}
debian=${2:-$(ls "$cache"/6.1.0-*-amd64/root/boot/config-* 2>/dev/null | head -1)}
[ -f "$debian" ] || { echo "no Debian config (run make bench once, or pass DEBIAN_CONFIG)" >&2; exit 1; }
ours=$(go run ./cmd/spine kernel --json | sed -n 's/.*"config": "\(.*\)".*/\1/p')
run() { python3 "$checker/bin/kernel-hardening-checker" -c "$1" "${@:2}"; }
echo "Spine's kernel ($ours): $(run "$ours" | tail -1)"
echo "Debian's kernel ($debian): $(run "$debian" | tail -1)"
echo "Checks Spine's kernel fails:"
run "$ours" -m show_fail | grep 'FAIL' | grep -v 'Check is finished' | awk -F'|' '{print "  " $1 $NF}'
