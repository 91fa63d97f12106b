#!/usr/bin/env bash
# make demo: keys and a /persist passphrase (kept in demo/keys, git-ignored), two demo Spine
# versions, the machine disk with stage 0 signed by the owner's Secure Boot key, the firmware's
# variable store with that key enrolled, then a boot under QEMU through UEFI firmware with the
# console here (bay0's and the personas' lines; DEMO_VERBOSE=1 shows the boot logs too).
#   DEMO_TIMEOUT=90s   stop the machine after a while (non-interactive runs)
#   DEMO_INTERACTIVE=1 type the /persist passphrase yourself at the machine's prompt
set -euo pipefail
cd "$(dirname "$0")/.."
spine=bin/spine
out=demo/out
mkdir -p "$out"
{ [ -f demo/keys/spine.key ] && [ -f demo/keys/uefi.key ]; } || $spine keygen --out demo/keys
if [ ! -f demo/keys/passphrase ]; then
  (umask 077; head -c 18 /dev/urandom | base64 > demo/keys/passphrase)
fi
$spine build --config demo/spine.toml --key demo/keys/spine.key --out "$out/demo-v1.spine"
$spine build --config demo/spine.toml --key demo/keys/spine.key --version 2 --out "$out/demo-v2.spine"
$spine verify --pub demo/keys/spine.pub "$out/demo-v1.spine"
# The firmware's NVRAM: Secure Boot on, the owner's certificate enrolled as PK, KEK and db.
$spine uefi-vars --cert demo/keys/uefi.crt --out "$out/vars.fd"
# A light KDF keeps the demo's unlock quick under TCG; real machines keep the default.
$spine disk --a "$out/demo-v1.spine" --out "$out/disk.img" \
  --passphrase-file demo/keys/passphrase --kdf-memory 32MiB \
  --pub demo/keys/spine.pub --uefi-key demo/keys/uefi.key --uefi-cert demo/keys/uefi.crt
answer=(--passphrase-file demo/keys/passphrase)
if [ -n "${DEMO_INTERACTIVE:-}" ]; then
  answer=()
  echo "The /persist passphrase is in demo/keys/passphrase: $(cat demo/keys/passphrase)"
fi
cat <<MSG

Booting the demo machine (QEMU, serial console below). In another terminal, try:
  bin/spine ctl --socket $out/ctl.sock status
  bin/spine ctl --socket $out/ctl.sock personas
  bin/spine ctl --socket $out/ctl.sock replace heartbeat
  curl http://127.0.0.1:8080/                      # the web persona, counting in /data
  bin/spine ctl --socket $out/ctl.sock update $out/demo-v2.spine --reboot   # after the health window
  bin/spine ctl --socket $out/ctl.sock poweroff
Stop the machine with Ctrl-C.

MSG
verbose=()
[ -n "${DEMO_VERBOSE:-}" ] && verbose=(--verbose)
status=0
$spine vm --disk "$out/disk.img" --uefi-vars "$out/vars.fd" --ctl "$out/ctl.sock" \
  --forward 8080:8080 --timeout "${DEMO_TIMEOUT:-0}" "${answer[@]}" "${verbose[@]}" || status=$?
# spine vm's status 5 says the timeout stopped the machine: with DEMO_TIMEOUT that is the plan.
if [ -n "${DEMO_TIMEOUT:-}" ] && [ "$status" -eq 5 ]; then
  echo "demo: stopped after $DEMO_TIMEOUT, as DEMO_TIMEOUT asked"
  exit 0
fi
exit "$status"
