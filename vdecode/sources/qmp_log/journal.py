"""Format 4 in envelopes: libvirt's monitor messages as journald and KubeVirt store them.

* journald (libvirt 9.0 ``virLogOutputToJournald``): ``MESSAGE=`` is the bare message, with the
  time in ``__REALTIME_TIMESTAMP`` (µs). Read from ``journalctl -o json`` (one object a line;
  a message with control characters, such as ``SEND_MSG``'s ``\\r\\n``, is an array of byte
  values), ``journalctl -o export`` (``KEY=value`` lines, entries split by blank lines, binary
  fields as ``KEY`` + 64-bit length + bytes) and ``journalctl`` short output
  (``MMM DD HH:MM:SS host virtqemud[PID]: MESSAGE``, local time, the year not given: no time
  is taken). libvirt's syslog output is the same line with ``THREAD: prio : func:line : `` before
  the message; rsyslog writes the ``\r\n`` inside ``SEND_MSG`` as ``#015#012``.
* KubeVirt ``virt-launcher`` (``kubectl logs``): one JSON object a line,
  ``{"component":"virt-launcher","subcomponent":"libvirt","msg": MESSAGE,
  "timestamp":"2023-10-26T12:50:40.523000Z",...}``; a ``SEND_MSG``'s continuation is a record of
  its own (``" len=78 ret=78 errno=0"``).

The messages themselves are read by :class:`.libvirt.LibvirtMessages`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timezone

from vdecode.sources.qmp_log.builder import LogBuilder
from vdecode.sources.qmp_log.libvirt import LibvirtMessages
from vdecode.sources.qmp_log.qmpjson import json_record

__all__ = ("JOURNALD", "KUBEVIRT")

# journalctl short output, or syslog (virLogOutputToSyslog adds "THREAD: prio : func:line : ")
_SHORT = re.compile(r"^(?:\w{3} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)? \S+ )?(?:libvirtd|virtqemud)\[\d+\]: "
                    r"(?:\d+: (?:debug|info|warning|error) : \w+:\d+ : )?")
_KUBE_PREFIX = re.compile(r"^\[pod/[^\]]*\] ")
_MONITORISH = ("QEMU_MONITOR_", "Line [", "Entering monitor", "Domain id=")


def _journal_message(value) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, int) and 0 <= v < 256 for v in value):
        return bytes(value).decode("utf-8", "replace")
    return None


# --- journald ---------------------------------------------------------------------------------

class _Journald:
    NAME = "journald"

    @staticmethod
    def sniff(head: list[str]) -> int:
        score = 0
        for text in head:
            if text.startswith("{") and '"MESSAGE"' in text and "__REALTIME_TIMESTAMP" in text:
                score += 3
            elif text.startswith("__REALTIME_TIMESTAMP=") or text.startswith("__CURSOR="):
                score += 3
            elif _SHORT.match(text) and "QEMU_MONITOR_" in text:
                score += 3
        return score

    @staticmethod
    def read(lines: Iterable[tuple[int, str]], b: LogBuilder) -> None:
        msgs = LibvirtMessages(b)
        entry: dict[str, str] = {}
        entry_line = 0
        binary: list[str] | None = None         # export format: a binary MESSAGE being gathered
        for n, text in lines:
            if binary is not None:
                binary.append(text)
                if _export_binary_done(binary):
                    entry["MESSAGE"] = _export_binary_value(binary)
                    binary = None
                continue
            if text.startswith("{"):
                rec = json_record(b, n, text, "journal record is not JSON: ")
                if not isinstance(rec, dict):
                    continue
                msg = _journal_message(rec.get("MESSAGE"))
                if msg is not None and msg.startswith(_MONITORISH):
                    msgs.message(msg, _usec(rec.get("__REALTIME_TIMESTAMP")), n,
                                 rec.get("CODE_FUNC"))
                continue
            if not text.strip():                # export: an entry ends
                if entry:
                    _export_entry(msgs, entry, entry_line)
                entry = {}
                continue
            k, eq, v = text.partition("=")
            if eq and k.replace("_", "").isalnum() and k.upper() == k:
                if not entry:
                    entry_line = n
                entry[k] = v
                continue
            if text == "MESSAGE":               # export: binary field follows
                if not entry:
                    entry_line = n
                binary = []
                continue
            m = _SHORT.match(text)
            if m is not None:
                rest = text[m.end():]
                if rest.startswith(_MONITORISH):
                    msgs.message(rest, None, n)
        if entry:
            _export_entry(msgs, entry, entry_line)
        msgs.finish()


def _export_binary_done(parts: list[str]) -> bool:
    raw = "\n".join(parts)
    if len(raw) < 8:
        return False
    size = int.from_bytes(raw[:8].encode("latin-1", "replace"), "little")
    return len(raw) - 8 >= size or len(raw) > (1 << 24)


def _export_binary_value(parts: list[str]) -> str:
    raw = "\n".join(parts)
    i = raw.find("QEMU_MONITOR_")
    return raw[i:] if i >= 0 else raw[8:]


def _export_entry(msgs: LibvirtMessages, entry: dict[str, str], line: int) -> None:
    msg = entry.get("MESSAGE")
    if msg is not None and msg.startswith(_MONITORISH):
        msgs.message(msg, _usec(entry.get("__REALTIME_TIMESTAMP")), line, entry.get("CODE_FUNC"))


def _usec(value) -> float | None:
    try:
        return int(value) / 1e6
    except (TypeError, ValueError):
        return None


# --- KubeVirt ---------------------------------------------------------------------------------

class _KubeVirt:
    NAME = "kubevirt"

    @staticmethod
    def sniff(head: list[str]) -> int:
        score = 0
        for text in head:
            text = _KUBE_PREFIX.sub("", text, count=1)
            if text.startswith("{") and '"msg"' in text and ('"virt-launcher"' in text
                                                             or '"subcomponent"' in text):
                score += 3 if "QEMU_MONITOR_" in text else 1
        return score

    @staticmethod
    def read(lines: Iterable[tuple[int, str]], b: LogBuilder) -> None:
        msgs = LibvirtMessages(b)
        for n, text in lines:
            text = _KUBE_PREFIX.sub("", text, count=1)
            if not text.startswith("{") or '"msg"' not in text:
                continue
            rec = json_record(b, n, text, "virt-launcher record is not JSON: ")
            if not isinstance(rec, dict) or rec.get("subcomponent", "libvirt") != "libvirt":
                continue
            msg = rec.get("msg")
            if isinstance(msg, str) and msg.startswith(_MONITORISH):
                pos = rec.get("pos")
                func = pos.split(":")[0] if isinstance(pos, str) else None
                msgs.message(msg, _iso(rec.get("timestamp")), n, func)
        msgs.finish()


def _iso(value) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp()
    except ValueError:
        return None


JOURNALD = _Journald()
KUBEVIRT = _KubeVirt()
