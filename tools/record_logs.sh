#!/bin/bash
# Records small real QMP logs in the formats vdecode reads, from Debian 12's real programs:
#   libvirt 9.0 (libvirtd.log at debug for the monitor, virsh qemu-monitor-command/-event),
#   QEMU 7.2 trace output (handle_qmp_command, monitor_qmp_respond), qmp-shell (transcript, -l log),
#   qemu.qmp debug logging, and a socat wire transcript.
# The guest is a QEMU with no disk/kernel content that sits in the firmware under TCG, with a few
# virtio devices: enough for x-query-virtio*. usage (root): tools/record_logs.sh OUT_DIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
W=${VD_WORK:-${TMPDIR:-/tmp}/vdecode-record-logs}
PY=${PYTHON:-$HERE/../.venv/bin/python}
rm -rf "$W"; mkdir -p "$W"
if ! command -v libvirtd >/dev/null || ! command -v qemu-system-x86_64 >/dev/null || ! command -v socat >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils socat >/dev/null
fi

# --- libvirt ---------------------------------------------------------------------------------------
# A container has no systemd and no usable cgroups: run libvirtd by hand, QEMU as root, logs to files.
cat > "$W/qemu.conf" <<CONF
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
cgroup_controllers = [ ]
stdio_handler = "file"
namespaces = [ ]
CONF
cp /etc/libvirt/qemu.conf "$W/qemu.conf.orig" 2>/dev/null || true
cp "$W/qemu.conf" /etc/libvirt/qemu.conf
cat > "$W/libvirtd.conf" <<CONF
log_filters = "1:qemu.qemu_monitor 1:qemu.qemu_monitor_json 1:qemu.qemu_domain 1:qemu.qemu_process 4:*"
log_outputs = "1:file:$W/libvirtd.log"
CONF
restore() {
  [ -n "${LVPID:-}" ] && kill "$LVPID" 2>/dev/null || true
  [ -n "${QPID:-}" ] && kill "$QPID" 2>/dev/null || true
  [ -f "$W/qemu.conf.orig" ] && cp "$W/qemu.conf.orig" /etc/libvirt/qemu.conf
}
trap restore EXIT
mkdir -p /run/libvirt /var/lib/libvirt/qemu /var/log/libvirt/qemu
libvirtd --config "$W/libvirtd.conf" > "$W/libvirtd.stderr" 2>&1 &
LVPID=$!
for _ in $(seq 50); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.2; done
V="virsh -c qemu:///system"
qemu-img create -f qcow2 "$W/disk.qcow2" 16M >/dev/null
domain_xml() {   # NAME UUID
cat <<XML
<domain type='qemu'>
  <name>$1</name>
  <uuid>$2</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$W/disk.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <readonly/>
    </disk>
    <controller type='virtio-serial' index='0'/>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <memballoon model='virtio'/>
    <graphics type='vnc' port='-1' listen='127.0.0.1'/>
  </devices>
</domain>
XML
}
domain_xml vd-guest1 6f0e7e0a-1c1b-4f7e-9a55-0d2d1b1b0001 > "$W/guest1.xml"
domain_xml vd-guest2 6f0e7e0a-1c1b-4f7e-9a55-0d2d1b1b0002 > "$W/guest2.xml"
$V create "$W/guest1.xml"
$V create "$W/guest2.xml"
sleep 2
$V qemu-monitor-event vd-guest1 --loop --timestamp > "$W/virsh-events.txt" 2>&1 &
EVPID=$!
$V qemu-monitor-event vd-guest1 --loop --pretty > "$W/virsh-events-pretty.txt" 2>&1 &
EVPID2=$!
sleep 1
{
  echo "\$ virsh qemu-monitor-command vd-guest1 '{\"execute\":\"x-query-virtio\"}'"
  $V qemu-monitor-command vd-guest1 '{"execute":"x-query-virtio"}'
  for dev in $($V qemu-monitor-command vd-guest1 '{"execute":"x-query-virtio"}' | "$PY" -c 'import json,sys; [print(d["path"]) for d in json.load(sys.stdin)["return"]]'); do
    echo "\$ virsh qemu-monitor-command vd-guest1 '{\"execute\":\"x-query-virtio-status\",\"arguments\":{\"path\":\"$dev\"}}'"
    $V qemu-monitor-command vd-guest1 "{\"execute\":\"x-query-virtio-status\",\"arguments\":{\"path\":\"$dev\"}}"
  done
} > "$W/virsh-compact.txt"
dev=$($V qemu-monitor-command vd-guest1 '{"execute":"x-query-virtio"}' | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["return"][0]["path"])')
{
  echo "\$ virsh qemu-monitor-command vd-guest1 --pretty '{\"execute\":\"x-query-virtio-queue-status\",\"arguments\":{\"path\":\"$dev\",\"queue\":0}}'"
  $V qemu-monitor-command vd-guest1 --pretty "{\"execute\":\"x-query-virtio-queue-status\",\"arguments\":{\"path\":\"$dev\",\"queue\":0}}"
  echo "\$ virsh qemu-monitor-command vd-guest1 --pretty '{\"execute\":\"x-query-virtio-queue-status\",\"arguments\":{\"path\":\"$dev\",\"queue\":9}}'"
  $V qemu-monitor-command vd-guest1 --pretty "{\"execute\":\"x-query-virtio-queue-status\",\"arguments\":{\"path\":\"$dev\",\"queue\":9}}" || true
} > "$W/virsh-pretty.txt" 2>&1
$V qemu-monitor-command vd-guest2 '{"execute":"x-query-virtio"}' >/dev/null
$V suspend vd-guest1; sleep 0.3; $V resume vd-guest1; sleep 0.3
$V qemu-monitor-command vd-guest1 '{"execute":"system_reset"}' >/dev/null; sleep 1
# a restart: the monitor connection (and libvirt's id counter) starts again
$V destroy vd-guest1; sleep 0.5
kill "$EVPID" "$EVPID2" 2>/dev/null || true
$V create "$W/guest1.xml"; sleep 1
$V qemu-monitor-command vd-guest1 '{"execute":"x-query-virtio"}' >/dev/null
$V destroy vd-guest1; $V destroy vd-guest2
sleep 0.5
kill "$LVPID"; wait "$LVPID" 2>/dev/null || true; LVPID=
# keep the monitor traffic and the VM names, not the capability probes and start-up floods
"$PY" "$HERE/trim_libvirt_log.py" "$W/libvirtd.log" "$OUT/libvirtd.log" 3000
cp "$W/virsh-compact.txt" "$W/virsh-pretty.txt" "$W/virsh-events.txt" "$W/virsh-events-pretty.txt" "$OUT/"

# --- QEMU alone: trace output, qmp-shell, qemu.qmp, socat -------------------------------------------
qemu-system-x86_64 -machine pc,accel=tcg -m 64 -display none -nodefaults \
  -device virtio-rng-pci -device virtio-balloon-pci -device virtio-serial-pci \
  -chardev socket,id=q1,path="$W/qmp.sock",server=on,wait=off -mon chardev=q1,mode=control \
  -chardev socket,id=q2,path="$W/qmp2.sock",server=on,wait=off -mon chardev=q2,mode=control \
  -chardev socket,id=pretty,path="$W/pretty.sock",server=on,wait=off -mon chardev=pretty,mode=control,pretty=on \
  -msg timestamp=on -trace handle_qmp_command -trace monitor_qmp_respond -D "$W/trace.log" &
QPID=$!
for _ in $(seq 50); do [ -S "$W/pretty.sock" ] && break; sleep 0.1; done; sleep 1
# qemu.qmp 0.0.3..0.0.6 qmp_shell.main() passes the -l file where QMPShell.__init__ takes `server`
# (so `qmp-shell -l FILE` listens on the socket instead of connecting): run the same class, keywords.
cat > "$W/qmp_shell_l.py" <<'PYEOF'
import sys
from qemu.qmp.qmp_shell import QMPShell
sock, log, pretty = sys.argv[1], sys.argv[2], sys.argv[3] == "-p"
with QMPShell(sock, pretty=pretty, verbose=True, logfile=log) as q:
    q.connect(negotiate=True)
    for _ in q.repl():
        pass
PYEOF
PATH0=/machine/peripheral-anon/device[0]/virtio-backend
printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"x-query-virtio"}' \
  "{\"execute\":\"x-query-virtio-queue-status\",\"arguments\":{\"path\":\"$PATH0\",\"queue\":0}}" \
  | socat -t 2 - UNIX-CONNECT:"$W/qmp2.sock" > "$OUT/socat-replies.txt"
printf '%s\n' '{ "execute": "qmp_capabilities" }' '{"execute":"stop"}' '{"execute":"cont"}' \
  "{\"execute\":\"x-query-virtio-status\",\"arguments\":{\"path\":\"$PATH0\"}}" '{"execute":"query-status"}' \
  | socat -t 2 - UNIX-CONNECT:"$W/pretty.sock" > "$OUT/socat-pretty.txt"
printf '%s\n' 'x-query-virtio' "x-query-virtio-queue-status path=$PATH0 queue=0" \
  "x-query-virtio-queue-status path=$PATH0 queue=7" 'stop' 'cont' '' \
  | "$PY" "$W/qmp_shell_l.py" "$W/qmp.sock" "$OUT/qmp-shell-l.log" -c > "$OUT/qmp-shell.txt" 2>&1
printf '%s\n' "x-query-virtio-status path=$PATH0" 'query-status' \
  | "$PY" "$W/qmp_shell_l.py" "$W/qmp.sock" "$OUT/qmp-shell-pretty-l.log" -p > "$OUT/qmp-shell-pretty.txt" 2>&1
"$PY" - "$W/qmp.sock" "$PATH0" > "$OUT/qemu-qmp-debug.log" 2>&1 <<'PYEOF'
import asyncio, logging, sys
from qemu.qmp import ExecuteError, QMPClient
logging.basicConfig(level=logging.DEBUG, format="%(asctime)s - %(levelname)s: %(name)s.%(funcName)s %(message)s")
async def main():
    q = QMPClient("vd")
    await q.connect(sys.argv[1])
    await q.execute("x-query-virtio")
    await q.execute("x-query-virtio-queue-status", {"path": sys.argv[2], "queue": 0})
    try:
        await q.execute("x-query-virtio-queue-status", {"path": sys.argv[2], "queue": 1})
    except ExecuteError:
        pass
    await q.execute("stop")
    await q.execute("cont")
    await asyncio.sleep(0.2)
    await q.disconnect()
asyncio.run(main())
PYEOF
kill "$QPID"; wait "$QPID" 2>/dev/null || true; QPID=
cp "$W/trace.log" "$OUT/qemu-trace.log"
ls -la "$OUT"
