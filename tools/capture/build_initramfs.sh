#!/bin/bash
# Builds a tiny busybox initramfs with the virtio modules of a Debian kernel package (cloud or generic).
# usage: build_initramfs.sh KPKG_DIR OUT.cpio.gz
# Changed from ../shared/capture: modules are resolved with their dependencies from modules.dep
# (the generic kernel has 9p, virtio_crypto, virtio-gpu; the cloud one lacks them), missing ones are skipped.
set -euo pipefail
K=$1; OUT=$2
KV=$(ls "$K/lib/modules")
W=$(mktemp -d)
mkdir -p "$W"/{bin,sbin,proc,sys,dev,tmp,lib/modules,mnt}
cp /bin/busybox "$W/bin/busybox"
WANT="scsi_common scsi_mod sd_mod virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
 virtio_mmio virtio_blk failover net_failover virtio_net virtio-rng virtio_console virtio_balloon virtio_scsi
 vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport virtio_input evdev pvpanic pvpanic-pci pvpanic-mmio
 9p 9pnet_virtio virtio_crypto virtio-gpu virtio_mem"
python3 - "$K/lib/modules/$KV" "$W/lib/modules" $WANT <<'PY'
import lzma, os, sys
root, out, want = sys.argv[1], sys.argv[2], sys.argv[3:]
deps = {}
for line in open(os.path.join(root, "modules.dep")):
    mod, _, rest = line.partition(":")
    deps[mod] = rest.split()
byname = {os.path.basename(m).split(".ko")[0].replace("-", "_"): m for m in deps}
order, seen = [], set()
def visit(m):
    if m in seen: return
    seen.add(m)
    for d in deps[m]: visit(d)
    order.append(m)
for w in want:
    m = byname.get(w.replace("-", "_"))
    if m is None:
        print("skip missing module", w, file=sys.stderr); continue
    visit(m)
with open(os.path.join(out, "order"), "w") as f:
    for m in order:
        name = os.path.basename(m).split(".ko")[0]
        data = open(os.path.join(root, m), "rb").read()
        if m.endswith(".xz"): data = lzma.decompress(data)
        open(os.path.join(out, name + ".ko"), "wb").write(data)
        f.write(name + "\n")
print(len(order), "modules", file=sys.stderr)
PY
cat > "$W/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
# dependency order differs between kernel builds: retry until every module is in
for pass in 1 2 3 4; do for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko 2>/dev/null; done; done
sleep 1
ip link set lo up
for i in eth0 eth1 eth2; do [ -e /sys/class/net/$i ] && ip link set $i up; done
ip addr add 10.0.2.15/24 dev eth0 2>/dev/null
echo VDECODE-GUEST-READY > /dev/ttyS0
# the control shell: the host drives the guest through the second serial port
CTL=ttyS1
for a in $(cat /proc/cmdline); do case $a in vdctl=*) CTL=${a#vdctl=};; esac; done
while true; do setsid sh -c "exec sh </dev/$CTL >/dev/$CTL 2>&1"; sleep 0.2; done
INIT
chmod +x "$W/init"
(cd "$W" && find . | cpio -o -H newc 2>/dev/null | gzip -9) > "$OUT"
rm -rf "$W"
echo "built $OUT ($(du -h "$OUT" | cut -f1))"
