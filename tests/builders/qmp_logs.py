"""Writers of QMP logs in the envelopes that cannot be recorded here, and a big synthetic log.

* ``journald_json`` / ``journald_export`` / ``kubevirt``: re-wrap the message part of real libvirt
  log records (``tests/data/logs/real/libvirtd.log``) the way journald (``journalctl -o json``,
  ``-o export``; libvirt's ``virLogOutputToJournald`` sends the bare message, ``\\r\\n fd=-1``
  included) and KubeVirt's virt-launcher (a JSON object a line, the continuation as its own
  record) store them.
* ``write_synthetic_libvirt``: a libvirtd debug log of any size, several VMs polling virtio
  queries, for the bounded-memory benchmark.
"""

from __future__ import annotations

import calendar
import json
import re
import struct
from datetime import datetime, timezone
from pathlib import Path

HEADER = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3})\+0000: (\d+): (\w+) : (\w+):(\d+) : (.*)$")


def libvirt_records(path: Path) -> list[dict]:
    """Records of a libvirt log: time (µs), thread, priority, func, line and the whole message."""
    recs: list[dict] = []
    for raw in Path(path).read_bytes().split(b"\n"):
        text = raw.decode("utf-8")
        m = HEADER.match(text)
        if m is None:
            if recs and text:
                recs[-1]["message"] += "\n" + text
            continue
        ts, ms, thread, prio, func, line, msg = m.groups()
        usec = calendar.timegm(datetime.strptime(ts, "%Y-%m-%d %H:%M:%S").timetuple()) * 10**6 \
            + int(ms) * 1000
        recs.append({"usec": usec, "thread": thread, "priority": prio, "func": func,
                     "line": line, "message": msg})
    return recs


_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3}


def _fields(r: dict) -> dict:
    return {"__REALTIME_TIMESTAMP": str(r["usec"]), "PRIORITY": str(_PRIORITY[r["priority"]]),
            "SYSLOG_IDENTIFIER": "virtqemud", "CODE_FUNC": r["func"], "CODE_LINE": r["line"],
            "MESSAGE": r["message"]}


def journald_json(recs: list[dict]) -> str:
    """``journalctl -o json``: a message with control characters becomes an array of bytes."""
    out = []
    for r in recs:
        f = _fields(r)
        if any(ord(c) < 32 for c in f["MESSAGE"]):
            f["MESSAGE"] = list(f["MESSAGE"].encode("utf-8"))
        out.append(json.dumps(f, separators=(",", ":")))
    return "\n".join(out) + "\n"


def journald_export(recs: list[dict]) -> bytes:
    """``journalctl -o export``: ``KEY=value`` lines; a value with a newline is binary-encoded."""
    out = bytearray()
    for i, r in enumerate(recs):
        out += f"__CURSOR=s=0;i={i:x}\n".encode()
        for k, v in _fields(r).items():
            data = v.encode("utf-8")
            if b"\n" in data or any(c < 32 for c in data):
                out += k.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
            else:
                out += k.encode() + b"=" + data + b"\n"
        out += b"\n"
    return bytes(out)


def kubevirt(recs: list[dict]) -> str:
    """virt-launcher's JSON lines; the text after a ``\\r\\n`` is a record of its own."""
    out = []
    for r in recs:
        when = datetime.fromtimestamp(r["usec"] / 1e6, timezone.utc)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        first, _, rest = r["message"].partition("\n")
        out.append(json.dumps({"component": "virt-launcher", "level": "info",
                               "msg": first.rstrip("\r"), "pos": f"{r['func']}:{r['line']}",
                               "subcomponent": "libvirt", "thread": r["thread"],
                               "timestamp": stamp}, separators=(",", ":")))
        if rest:
            out.append(json.dumps({"component": "virt-launcher", "level": "info", "msg": rest,
                                   "subcomponent": "libvirt", "timestamp": stamp},
                                  separators=(",", ":")))
    return "\n".join(out) + "\n"


# --- a big synthetic libvirt log --------------------------------------------------------------

_STATUS = {"device-endian": "little", "bus-name": "", "disable-legacy-check": False,
           "name": "virtio-net", "started": True, "device-id": 1,
           "backend-features": {"dev-features": [], "transports": []}, "start-on-kick": False,
           "isr": 1, "broken": False,
           "status": {"statuses": ["VIRTIO_CONFIG_S_ACKNOWLEDGE: Valid virtio device found",
                                   "VIRTIO_CONFIG_S_DRIVER: Guest OS compatible with device",
                                   "VIRTIO_CONFIG_S_FEATURES_OK: Feature negotiation complete",
                                   "VIRTIO_CONFIG_S_DRIVER_OK: Driver setup and ready"]},
           "num-vqs": 3, "guest-features": {"dev-features": ["VIRTIO_NET_F_MAC: Device has given MAC address"],
                                             "transports": ["VIRTIO_F_VERSION_1: Device compliant for v1 spec (legacy)"]},
           "host-features": {"dev-features": ["VIRTIO_NET_F_MAC: Device has given MAC address"],
                             "transports": ["VIRTIO_F_VERSION_1: Device compliant for v1 spec (legacy)"]},
           "use-guest-notifier-mask": True, "vm-running": True, "queue-sel": 2, "disabled": False,
           "vhost-started": False, "use-started": True}


def write_synthetic_libvirt(path: Path, size: int, vms: int = 3, base: int = 1795575896,
                            advance_every: int = 1) -> dict:
    """Write a libvirtd debug log of about ``size`` bytes: ``vms`` VMs, each greeting and then
    polling ``x-query-virtio-queue-status`` and ``x-query-virtio-status``, with ``Line [``
    duplicates, IO_WRITE twins and a STOP/RESUME now and then.

    :param advance_every: the queues' indices move every this many polls (1: every queue-status
        reply differs, the worst case for memory; large: mostly idle queues, replies repeat).

    :return: counts written: ``{"exchanges": N, "events": N, "bytes": N}``.
    """
    mons = [f"0x7fbf4800{6180 + 0x5c0 * i:04x}" for i in range(vms)]
    greeting = ('{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": '
                '"Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}')
    status = json.dumps(_STATUS)
    n_ex = n_ev = 0
    ids = [0] * vms
    written = 0
    ms = 0

    def stamp() -> str:
        t = base + ms / 1000
        return datetime.fromtimestamp(int(t), timezone.utc).strftime("%Y-%m-%d %H:%M:%S") + \
            f".{ms % 1000:03d}+0000"

    with open(path, "w", encoding="utf-8", newline="") as f:
        for i, mon in enumerate(mons):
            f.write(f"{stamp()}: 8312: info : qemuMonitorOpenInternal:647 : QEMU_MONITOR_NEW: "
                    f"mon={mon} fd=28\n")
            f.write(f"{stamp()}: 8314: debug : qemuDomainObjEnterMonitorInternal:6107 : Entering "
                    f"monitor (mon={mon} vm=0x7fbf48007df0 name=vm{i})\n")
            f.write(f"{stamp()}: 8337: debug : qemuMonitorJSONIOProcessLine:189 : Line [{greeting}]\n")
        k = 0
        while written < size:
            i = k % vms
            mon = mons[i]
            ids[i] += 1
            mid = f"libvirt-{ids[i]}"
            path_ = f"/machine/peripheral/net{i}/virtio-backend"
            if k % 3 == 0:
                cmd = json.dumps({"execute": "x-query-virtio-status", "arguments": {"path": path_},
                                  "id": mid}, separators=(",", ":"))
                reply = '{"return": ' + status + f', "id": "{mid}"}}'
            else:
                q = k % 3
                cmd = json.dumps({"execute": "x-query-virtio-queue-status",
                                  "arguments": {"path": path_, "queue": q}, "id": mid},
                                 separators=(",", ":"))
                used = (k // vms // advance_every) % 65536
                reply = (f'{{"return": {{"signalled-used": {used}, "inuse": 0, "name": "virtio-net", '
                         f'"vring-align": 4096, "vring-desc": {0x1000000 + q * 0x4000}, '
                         f'"signalled-used-valid": true, "vring-num-default": 256, "vring-avail": '
                         f'{0x1001000 + q * 0x4000}, "queue-index": {q}, "last-avail-idx": {used}, '
                         f'"vring-used": {0x1002000 + q * 0x4000}, "used-idx": {used}, '
                         f'"shadow-avail-idx": {used}, "vring-num": 256}}, "id": "{mid}"}}')
            lines = [
                f"{stamp()}: 8314: info : qemuMonitorSend:861 : QEMU_MONITOR_SEND_MSG: mon={mon} "
                f"msg={cmd}\r\n fd=-1\n",
                f"{stamp()}: 8337: info : qemuMonitorIOWrite:366 : QEMU_MONITOR_IO_WRITE: mon={mon} "
                f"buf={cmd}\r\n len={len(cmd) + 2} ret={len(cmd) + 2} errno=0\n",
                f"{stamp()}: 8337: debug : qemuMonitorJSONIOProcessLine:189 : Line [{reply}]\n",
                f"{stamp()}: 8337: info : qemuMonitorJSONIOProcessLine:208 : QEMU_MONITOR_RECV_REPLY: "
                f"mon={mon} reply={reply}\n",
            ]
            n_ex += 1
            if k % 997 == 0:
                ev = (f'{{"timestamp": {{"seconds": {base + ms // 1000}, "microseconds": '
                      f'{(ms % 1000) * 1000}}}, "event": "{"STOP" if k % 2 else "RESUME"}"}}')
                lines.append(f"{stamp()}: 8337: info : qemuMonitorJSONIOProcessLine:203 : "
                             f"QEMU_MONITOR_RECV_EVENT: mon={mon} event={ev}\n")
                n_ev += 1
            chunk = "".join(lines)
            f.write(chunk)
            written += len(chunk)
            k += 1
            ms += 7
    return {"exchanges": n_ex, "events": n_ev, "bytes": Path(path).stat().st_size}
