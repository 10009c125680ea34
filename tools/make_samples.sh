#!/usr/bin/env bash
# Remake samples/*.vdb: bug-report bundles (docs/bundle.md) of the real QEMU 7.2 captures.
#   samples/basic-core.vdb       the basic capture's QEMU process core + its early QMP log
#   samples/mixed-elf-early.vdb  the mixed capture's dump-guest-memory ELF + its early QMP log
# usage: tools/make_samples.sh [CAPTURES_DIR]   (default ../shared/captures, or $VDECODE_CAPTURES)
# Needs zstd (the captures' dumps are .zst). Output is reproducible: the bundle's "created" time
# comes from SOURCE_DATE_EPOCH (the captures' case.json modification time unless set).
set -euo pipefail
cd "$(dirname "$0")/.."
captures="${1:-${VDECODE_CAPTURES:-../shared/captures}}"
vdecode="${VDECODE:-.venv/bin/vdecode}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(stat -c %Y "$captures/basic/case.json")}"

unpack() {  # unpack CASE FILE -> path of the decompressed dump
    mkdir -p "$tmp/$1"
    local out="$tmp/$1/${2%.zst}"
    zstd -q -d -f "$captures/$1/$2" -o "$out"
    echo "$out"
}

mkdir -p samples
core="$(unpack basic qemu.core.zst)"
"$vdecode" bundle "$core" --log "$captures/basic/early.jsonl" -o samples/basic-core.vdb
rm -f "$core"
elf="$(unpack mixed dump.elf.zst)"
"$vdecode" bundle "$elf" --log "$captures/mixed/early.jsonl" -o samples/mixed-elf-early.vdb
rm -f "$elf"
ls -l samples/*.vdb
