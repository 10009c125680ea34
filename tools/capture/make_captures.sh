#!/bin/bash
# Records captures from a real QEMU (Debian's 7.2) running a Debian cloud kernel with a busybox initramfs.
# usage: make_captures.sh OUT_DIR SCENARIO.json...
# VD_QEMU=<qemu-system-x86_64 or a wrapper> picks the release (default: the system's; get_qemu.sh makes
# a wrapper for another Debian suite). VD_NOCOMPRESS=1 keeps the dumps uncompressed. The recorder's
# stderr is kept as OUT_DIR/<name>/capture.log.
# Each scenario becomes OUT_DIR/<scenario name>/ (see README.md). Needs root for apt; TCG, no KVM needed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$1; shift
WORK=${VD_WORK:-${TMPDIR:-/tmp}/vdecode-capture-work}
mkdir -p "$OUT" "$WORK"
if ! command -v qemu-system-x86_64 >/dev/null || ! command -v busybox >/dev/null || ! command -v gdb >/dev/null \
   || ! command -v depmod >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    qemu-system-x86 qemu-utils qemu-system-data busybox-static cpio zstd gdb xz-utils kmod >/dev/null
fi
# two kernels: cloud (as the shared captures) and gen (the generic one: 9p, virtio_crypto, virtio-gpu)
for k in cloud gen; do
  [ -f "$WORK/vmlinuz-$k" ] && continue
  flavour=$([ $k = cloud ] && echo cloud-amd64 || echo amd64)
  pkg=$(apt-cache search --names-only "^linux-image-[0-9.]+-[0-9]+-$flavour-unsigned\$" | sort -V | tail -1 | cut -d' ' -f1)
  (cd "$WORK" && apt-get download "$pkg" >/dev/null 2>&1 && rm -rf kpkg-$k && mkdir kpkg-$k && dpkg -x ./"$pkg"_*.deb kpkg-$k)
  depmod -b "$WORK/kpkg-$k" "$(ls "$WORK/kpkg-$k/lib/modules")"
  cp "$WORK"/kpkg-$k/boot/vmlinuz-* "$WORK/vmlinuz-$k"
  "$HERE/build_initramfs.sh" "$WORK/kpkg-$k" "$WORK/initramfs-$k.cpio.gz"
done
echo "QEMU: $(${VD_QEMU:-qemu-system-x86_64} --version | head -1)"
for scen in "$@"; do
  name=$(basename "$scen" .json)
  [ -f "$OUT/$name/case.json" ] && { echo "have $name"; continue; }
  rm -rf "${WORK:?}/$name"
  desc=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get('description',''))" "$scen")
  if VD_WORK="$WORK" timeout 1800 \
       python3 "$HERE/capture.py" "$scen" "$WORK/$name" > "$WORK/$name.log" 2>&1; then
    python3 "$HERE/package.py" "$WORK/$name" "$OUT/$name" "$desc" && cp "$WORK/$name.log" "$OUT/$name/capture.log" \
      && rm -rf "${WORK:?}/$name"
  else
    echo "FAILED $name (log: $WORK/$name.log)"; tail -3 "$WORK/$name.log"
  fi
done
