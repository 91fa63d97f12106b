#!/usr/bin/env bash
# make demo: keys (kept in demo/keys, git-ignored), two demo Spine versions, the initramfs, the
# machine disk, then a boot under QEMU with the console on this terminal.
# DEMO_TIMEOUT=60s stops the machine after a while (non-interactive runs).
set -euo pipefail
cd "$(dirname "$0")/.."
spine=bin/spine
out=demo/out
mkdir -p "$out"
[ -f demo/keys/spine.key ] || $spine keygen --out demo/keys
$spine build --config demo/spine.toml --key demo/keys/spine.key --out "$out/demo-v1.spine"
$spine build --config demo/spine.toml --key demo/keys/spine.key --version 2 --out "$out/demo-v2.spine"
$spine verify --pub demo/keys/spine.pub "$out/demo-v1.spine"
$spine initramfs --pub demo/keys/spine.pub --out "$out/initrd.gz"
$spine disk --a "$out/demo-v1.spine" --out "$out/disk.img"
cat <<MSG

Booting the demo machine (QEMU, serial console below). In another terminal, try:
  bin/spine inspect $out/demo-v1.spine
Stop the machine with Ctrl-C.

MSG
exec $spine vm --disk "$out/disk.img" --initrd "$out/initrd.gz" --ctl "$out/ctl.sock" \
  --forward 8080:8080 --timeout "${DEMO_TIMEOUT:-0}"
