"""Format 4: libvirt daemon logs (``libvirtd.log``, ``virtqemud.log``).

libvirt's QEMU driver logs its monitor traffic as probes (libvirt 9.0 ``src/qemu/qemu_monitor.c``
``qemuMonitorSend``/``qemuMonitorIOWrite``, ``qemu_monitor_json.c``
``qemuMonitorJSONIOProcessLine``), one record per ``virLogOutputToFd`` line
``TIME: THREAD: PRIORITY : FUNC:LINE : MESSAGE``::

    QEMU_MONITOR_SEND_MSG: mon=%p msg=%s fd=%d        the command, queued (ends in \\r\\n, so the
    QEMU_MONITOR_IO_WRITE: mon=%p buf=%s len=.. ret=..  record continues on a " fd=.." line)
    QEMU_MONITOR_RECV_REPLY: mon=%p reply=%s
    QEMU_MONITOR_RECV_EVENT: mon=%p event=%s
    Line [%s]                                           (debug) every received line, greeting too
    QEMU_MONITOR_NEW: mon=%p ...                        a new monitor connection
    Entering monitor (mon=%p vm=%p name=%s)             (debug, qemu_domain.c) names the VM
    Domain id=%d name='%s' uuid=%s is tainted: %s       (warning) gives its UUID

Monitors are keyed by the ``mon=`` pointer; a ``QEMU_MONITOR_NEW``, a greeting or ``libvirt-1``
on a pointer seen before starts a new session (pointers are reused after a VM stops). The command
is taken from ``SEND_MSG`` (else ``IO_WRITE``, logged for the same bytes); ``Line [`` duplicates
the ``RECV_*`` records and is read only for the greeting. :class:`LibvirtMessages` reads the
message part and is shared with the journald and KubeVirt envelopes (:mod:`.journal`).
"""

from __future__ import annotations

import calendar
import json
import re
import sys
from collections.abc import Iterable

from vdecode.sources.qmp_log.builder import LogBuilder
from vdecode.sources.qmp_log.qmpjson import decode_qmp_json, loads_json

__all__ = ("NAME", "sniff", "read", "LibvirtMessages", "MONITOR_MESSAGE", "libvirt_time")

NAME = "libvirt"
# optional line number from web log viewers, then virLogFormatString's header
HEADER = re.compile(r"^\s*(?:\d+\s+)?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3})\+0000: \d+: "
                    r"(?:debug|info|warning|error) : (\w+):\d+ : ")
MONITOR_MESSAGE = re.compile(r"QEMU_MONITOR_(SEND_MSG|IO_WRITE|RECV_REPLY|RECV_EVENT|NEW|CLOSE): "
                             r"mon=(?:3D)?(0x[0-9a-fA-F]+|\(nil\))(?: (?:msg|buf|reply|event)=(.*))?")
_ENTERING = re.compile(r"Entering monitor \(mon=(0x[0-9a-fA-F]+) vm=\S+ name=([^)]*)\)")
_DOMAIN = re.compile(r"Domain id=-?\d+ name='([^']*)' uuid=([0-9a-fA-F-]{36}) ")
_CR = ("^M", "\r", "#015", "#012")
_PROBES = tuple(f"QEMU_MONITOR_{p}:" for p in ("SEND_MSG", "IO_WRITE", "RECV_REPLY", "RECV_EVENT"))


def sniff(head: list[str]) -> int:
    score = 0
    for text in head:
        m = HEADER.match(text)
        if m is not None:
            rest = text[m.end():]
            if rest.startswith("QEMU_MONITOR_") or rest.startswith("Line ["):
                score += 3
            else:
                score += 1
    return score


_time_cache: dict[str, int] = {}


def libvirt_time(ymdhms: str, ms: str) -> float:
    """``2022-03-09 17:29:34`` + ``247`` (UTC, libvirt's ``virTimeStringNowRaw``) as Unix seconds.

    >>> libvirt_time("1970-01-01 00:01:00", "500")
    60.5
    """
    base = _time_cache.get(ymdhms)
    if base is None:
        if len(_time_cache) > 4096:
            _time_cache.clear()
        try:
            base = calendar.timegm((int(ymdhms[0:4]), int(ymdhms[5:7]), int(ymdhms[8:10]),
                                    int(ymdhms[11:13]), int(ymdhms[14:16]), int(ymdhms[17:19]),
                                    0, 0, 0))
        except (ValueError, OverflowError):
            return float("nan")
        _time_cache[ymdhms] = base
    return base + int(ms) / 1000


class LibvirtMessages:
    """Reads libvirt's monitor messages (the part after the log header) into a builder."""

    def __init__(self, b: LogBuilder) -> None:
        self.b = b
        self.sent: dict[str, set] = {}          # mon -> ids seen in SEND_MSG, to drop IO_WRITE twins
        self.last_new: str | None = None        # mon of the latest QEMU_MONITOR_NEW (greeting owner)
        self.cache: dict[str, object] = {}      # JSON text -> decoded (polling repeats replies)
        self.greeting: tuple | None = None      # a greeting seen before any monitor was named

    def decode(self, text: str, line: int) -> object | None:
        """Decode a payload; equal payloads but for the ``id`` share their decoded members.

        libvirt polls: the same reply comes back with a new ``libvirt-N`` each time, so the text
        without its ``id`` is the cache key and each message is a small dict over shared values
        (messages are read-only records).
        """
        ident = None
        head = False
        key = text
        m = _ID_LAST.search(text)
        if m is not None:
            key, ident = text[:m.start()] + "}", m.group(1)
        else:
            m = _ID_FIRST.match(text)
            if m is not None:
                key, ident, head = "{" + text[m.end():], m.group(1), True
        base = self.cache.get(key)
        if base is None:
            try:
                base = loads_json(key)
            except ValueError:
                try:
                    base = decode_qmp_json(text)
                except ValueError as err:
                    self.b.warn(line, f"QMP message is not JSON: {err}")
                    return None
                ident = None                    # decoded whole: the id is already inside
            else:
                base = _intern_keys(base)       # one copy of "last-avail-idx" for 50k replies
                if len(key) < 65536:
                    if len(self.cache) >= 4096:
                        self.cache.clear()
                    self.cache[key] = base
        if ident is None or not isinstance(base, dict):
            return base
        try:
            value = loads_json(ident)
        except ValueError as err:
            self.b.warn(line, f"QMP message is not JSON: its id: {err}")
            return None
        if head:
            msg = {"id": value}
            msg.update(base)
            return msg
        msg = dict(base)
        msg["id"] = value
        return msg

    def message(self, text: str, t: float | None, line: int, func: str | None = None) -> bool:
        """Read one libvirt message; ``False`` when it is not one vdecode reads."""
        i = text.find("QEMU_MONITOR_")
        if i >= 0:
            m = MONITOR_MESSAGE.match(text, i)
            if m is None:
                if text.startswith(_PROBES, i):
                    self.b.warn(line, f"libvirt monitor record not understood, skipped: "
                                      f"{text[i:i + 60]}")
                return False
            kind, mon, payload = m.groups()
            if self.greeting is not None:
                g, gt, gline = self.greeting
                self.greeting = None
                self.b.message(g, t=gt, monitor=mon, line=gline)
            if kind == "NEW":
                self.last_new = mon
                self.b.new_session(mon)
                return True
            if kind == "CLOSE" or payload is None:
                return True
            payload = _strip_payload(payload, kind)
            if kind == "RECV_REPLY":
                msg = self.decode(payload, line)
                if msg is not None:
                    self.b.message(msg, t=t, monitor=mon, line=line)
            elif kind == "RECV_EVENT":
                msg = self.decode(payload, line)
                if msg is not None:
                    self.b.message(msg, t=t, monitor=mon, line=line)
            else:
                self._command(kind, mon, payload, t, line)
            return True
        if text.startswith("Line [") and func in (None, "qemuMonitorJSONIOProcessLine"):
            body = text[6:].rstrip()
            if body.endswith("]"):
                body = body[:-1]
            if body.startswith('{"QMP"') or body.startswith('{ "QMP"'):
                msg = self.decode(body, line)
                if msg is None:
                    pass
                elif self.last_new is None:
                    self.greeting = (msg, t, line)  # its monitor is the next one named
                else:
                    self.b.message(msg, t=t, monitor=self.last_new, line=line)
            return True
        if text.startswith("Entering monitor"):
            m = _ENTERING.match(text)
            if m is not None:
                self.b.set_vm(m.group(1), m.group(2))
            return True
        if text.startswith("Domain id="):
            # qemuDomainObjTaintMsg: "Domain id=1 name='vm' uuid=... is tainted: custom-monitor"
            m = _DOMAIN.match(text)
            if m is not None:
                self.b.vm_uuid(m.group(1), m.group(2))
            return True
        return False

    def finish(self) -> None:
        """Flush a greeting no monitor line ever claimed."""
        if self.greeting is not None:
            g, gt, gline = self.greeting
            self.greeting = None
            self.b.message(g, t=gt, monitor="", line=gline)

    def _command(self, kind: str, mon: str, payload: str, t: float | None, line: int) -> None:
        ids = self.sent.setdefault(mon, set())
        if kind == "IO_WRITE":
            mid = _quick_id(payload)
            if mid is not None and mid in ids:
                ids.discard(mid)                # the SEND_MSG of these bytes is already read
                return
            if mid is None and not payload.lstrip().startswith("{"):
                return                          # the tail of a partial write
        msg = self.decode(payload, line)
        if msg is None:
            return
        if kind == "SEND_MSG" and isinstance(msg, dict) and "id" in msg:
            if len(ids) > 64:
                ids.clear()
            ids.add(json.dumps(msg["id"]))
        self.b.message(msg, t=t, monitor=mon, line=line)


_ID = re.compile(r'"id":\s*("(?:[^"\\]|\\.)*"|-?\d+)\s*\}\s*$')
_ID_LAST = re.compile(r',\s*"id":\s*("(?:[^"\\]|\\.)*"|-?\d+)\s*\}$')
_ID_FIRST = re.compile(r'\{\s*"id":\s*("(?:[^"\\]|\\.)*"|-?\d+)\s*,\s*')


def _intern_keys(value, depth: int = 0):
    if depth > 64:
        return value
    if isinstance(value, dict):
        return {sys.intern(k): _intern_keys(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_intern_keys(v, depth + 1) for v in value]
    return value


def _quick_id(payload: str) -> str | None:
    m = _ID.search(payload)
    return m.group(1) if m is not None else None


def _strip_ends(text: str) -> str:
    """Drop trailing whitespace and line ends, as logged (``\r``), pasted (``^M``) or escaped by
    rsyslog (``#015#012``)."""
    text = text.rstrip()
    while text.endswith(_CR):
        text = text[:-2] if text.endswith("^M") else text[:-4] if text.endswith(("#015", "#012")) \
            else text[:-1]
        text = text.rstrip()
    return text


def _strip_payload(payload: str, kind: str) -> str:
    payload = _strip_ends(payload)
    if kind in ("SEND_MSG", "IO_WRITE"):
        # journald/syslog keep the whole message: "{...}\r\n fd=-1", "{...}\r\n len=.. ret=.."
        for tail in (" fd=", " len="):
            j = payload.rfind(tail)
            if j > 0 and _strip_ends(payload[:j]).endswith("}"):
                return _strip_ends(payload[:j])
    return payload


def read(lines: Iterable[tuple[int, str]], b: LogBuilder) -> None:
    msgs = LibvirtMessages(b)
    header = HEADER.match
    for n, text in lines:
        m = header(text)
        if m is None:
            continue                            # continuation (" fd=-1") or other output
        rest = text[m.end():]
        if not (rest.startswith("QEMU_MONITOR_") or rest.startswith("Line [")
                or rest.startswith("Entering monitor") or rest.startswith("Domain id=")):
            continue
        msgs.message(rest, libvirt_time(m.group(1), m.group(2)), n, m.group(3))
    msgs.finish()
