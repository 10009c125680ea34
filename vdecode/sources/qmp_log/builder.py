"""Turns a stream of QMP messages into :class:`QmpLog` records: classify, sessionise, pair.

Every format reader in this package feeds :class:`LogBuilder` one decoded message at a time
(with the log's time, monitor key and line number); the builder does what is the same for all
formats (``docs/interop/qmp-spec.rst`` in QEMU v7.2.0):

* classify by content: ``QMP`` is a greeting, ``execute``/``exec-oob`` a command,
  ``return``/``error`` a reply, ``event`` an event (a qmp-shell ``-l`` record holds a command and
  its reply in one object);
* sessionise: a greeting on a monitor that already had replies, or a ``libvirt-1`` command after
  other commands, starts a new session (libvirt reuses ``mon=`` pointers and restarts its ids);
* pair: a reply with an ``id`` answers the pending command with that ``id``; a reply without one
  answers the oldest pending in-band command of its monitor (QEMU answers in-band commands in
  order; ``exec-oob`` only pairs by id). A reply nothing asked for becomes an exchange with no
  request (piped transcripts).
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from vdecode.sources.qmp_log.knowledge import STATE_EVENTS
from vdecode.sources.qmp_log.model import QmpEvent, QmpExchange, QmpLog, LoggedMonitor

__all__ = ("LogBuilder", "id_key")

MAX_WARNINGS = 1000          # a 100 MB log of garbage must not grow an unbounded warning list
MAX_KEPT_EVENTS = 10000      # latest-only mode: run-state/unplug events kept, newest first out
COMPACT_EVERY = 256          # latest-only mode: drop superseded exchanges once this many pile up
# latest-only mode keeps this many newest answers per queue-status question, not one: the used
# idx between them is the pace that tells a 16-bit wrap from a step back (index_motion). Two are
# enough for a rate and keep a bundle's embedded log within one more reply per queue.
PACE_SAMPLES = 2


def id_key(value: Any) -> str:
    """A hashable key for a QMP ``id`` (any JSON value), equal for equal JSON values.

    >>> id_key({"b": 1, "a": 2}) == id_key({"a": 2, "b": 1})
    True
    """
    if isinstance(value, str):
        return "s" + value
    return json.dumps(value, sort_keys=True)


class _Session:
    """One QMP connection: its record, and the commands still waiting for a reply."""

    __slots__ = ("monitor", "by_id", "fifo", "latest", "superseded", "kept")

    def __init__(self, monitor: LoggedMonitor) -> None:
        self.monitor = monitor
        self.by_id: dict[str, QmpExchange] = {}
        self.fifo: deque[QmpExchange] = deque()      # in-band commands in issue order
        self.latest: dict[tuple[str, str], QmpExchange] = {}   # latest-only mode
        self.superseded: set[int] = set()
        self.kept: dict[tuple[str, str], deque[QmpExchange]] = {}   # queue-status samples

    def supersede(self, x: QmpExchange) -> None:
        """Latest-only mode: ``x`` answered; an older answer to the same question goes (for a
        queue's status, the oldest of :data:`PACE_SAMPLES`)."""
        key = (str(x.command), json.dumps(x.arguments, sort_keys=True))
        old = self.latest.get(key)
        self.latest[key] = x
        if x.command == "x-query-virtio-queue-status" and old is not None and old is not x:
            kept = self.kept.setdefault(key, deque())
            kept.append(old)
            if len(kept) < PACE_SAMPLES:
                return
            old = kept.popleft()
        if old is not None and old is not x:
            self.superseded.add(id(old))
            if len(self.superseded) >= COMPACT_EVERY:
                self.compact()

    def compact(self) -> None:
        if self.superseded:
            gone = self.superseded
            self.monitor.exchanges = [e for e in self.monitor.exchanges if id(e) not in gone]
            self.superseded = set()

    def pop_fifo(self) -> QmpExchange | None:
        while self.fifo:
            x = self.fifo.popleft()
            if x.reply is None:
                if x.request is not None and "id" in x.request:
                    self.by_id.pop(id_key(x.request["id"]), None)
                return x
        return None


class LogBuilder:
    """Collects one log's messages into a :class:`QmpLog`.

    :param path: the log file, as the user named it (for warnings).
    :param fmt: the format name the reader was chosen for.
    :param latest_only: keep only the newest answered exchange per (command, arguments), and only
        the run-state and unplug events (:data:`~vdecode.sources.qmp_log.knowledge.STATE_EVENTS`),
        so memory is bounded by what the log is about, not by its length. That is all the
        reconstruction asks of a log; ``vdecode log`` keeps everything.
    """

    def __init__(self, path: str, fmt: str, *, latest_only: bool = False) -> None:
        self.log = QmpLog(path=path, format=fmt)
        self.latest_only = latest_only
        self._all_sessions: list[_Session] = []
        self._sessions: dict[str, _Session] = {}
        self._counts: dict[str, int] = {}
        self._dropped_warnings = 0
        self._uuids: dict[str, str] = {}

    # -- sessions ------------------------------------------------------------------------------

    def session(self, key: str, vm: str | None = None) -> _Session:
        s = self._sessions.get(key)
        if s is None:
            s = self._open(key, vm)
        elif vm and not s.monitor.vm:
            s.monitor.vm = vm
        return s

    def new_session(self, key: str) -> None:
        """Start a fresh session on ``key`` (a reused libvirt ``mon=`` pointer, a reconnect)."""
        old = self._sessions.get(key)
        if old is not None and not (old.monitor.greeting is not None or old.monitor.exchanges
                                    or old.monitor.events):
            return                              # nothing on it yet: it is the new session
        self._open(key, None)                  # a reused pointer may belong to another VM

    def set_vm(self, key: str, vm: str) -> None:
        """Name the VM behind the current session of ``key`` (from the log's own context lines)."""
        s = self._sessions.get(key)
        if s is None:
            self._open(key, vm)
        elif not s.monitor.vm:
            s.monitor.vm = vm

    def vm_uuid(self, name: str, uuid: str) -> None:
        """The log says VM ``name`` has ``uuid`` (applied to its monitors at the end)."""
        self._uuids[name] = uuid

    def _open(self, key: str, vm: str | None) -> _Session:
        n = self._counts.get(key, 0) + 1
        self._counts[key] = n
        mon = LoggedMonitor(key=key if n == 1 else f"{key}#{n}", vm=vm)
        self.log.monitors.append(mon)
        s = self._sessions[key] = _Session(mon)
        self._all_sessions.append(s)
        return s

    # -- messages ------------------------------------------------------------------------------

    def warn(self, line: int | None, reason: str) -> None:
        """Record a skipped record as ``FILE line N: reason`` (bounded in number)."""
        if len(self.log.warnings) >= MAX_WARNINGS:
            self._dropped_warnings += 1
            return
        where = f" line {line}" if line is not None else ""
        self.log.warnings.append(f"{self.log.path}{where}: {reason}")

    def message(self, msg: Any, *, t: float | None = None, monitor: str = "",
                line: int | None = None, vm: str | None = None) -> None:
        """Add one QMP message, classified by its members.

        :param msg: the decoded JSON object.
        :param t: when the log wrote it (Unix seconds), if the log says.
        :param monitor: the monitor/VM key.
        :param line: its line number in the log.
        """
        if not isinstance(msg, dict):
            self.warn(line, f"not a QMP message: a JSON {type(msg).__name__}, not an object")
            return
        if "execute" in msg or "exec-oob" in msg:
            name = msg.get("execute", msg.get("exec-oob"))
            if not isinstance(name, str):
                self.warn(line, f"not a QMP command: the command name is a JSON "
                                f"{type(name).__name__}, not a string")
                return
            if "return" in msg or "error" in msg:          # qmp-shell -l: command and reply merged
                request = {k: v for k, v in msg.items() if k not in ("return", "error")}
                reply = {k: v for k, v in msg.items() if k in ("return", "error")}
                self.request(request, t=t, monitor=monitor, line=line, vm=vm)
                self.reply(reply, t=t, monitor=monitor, line=line, vm=vm)
            else:
                self.request(msg, t=t, monitor=monitor, line=line, vm=vm)
        elif "return" in msg or "error" in msg:
            self.reply(msg, t=t, monitor=monitor, line=line, vm=vm)
        elif "event" in msg:
            self.event(msg, t=t, monitor=monitor, line=line, vm=vm)
        elif "QMP" in msg:
            self.greeting(msg, t=t, monitor=monitor, line=line, vm=vm)
        else:
            keys = ", ".join(list(msg)[:4]) or "none"
            self.warn(line, f"not a QMP message: members {keys}; expected execute, return, "
                            f"error, event or QMP")

    def greeting(self, msg: dict[str, Any], *, t: float | None, monitor: str,
                 line: int | None, vm: str | None = None) -> None:
        s = self.session(monitor, vm)
        m = s.monitor
        # a second greeting, or one after replies, is a new connection; commands logged just
        # before the greeting (libvirt queues qmp_capabilities at once) belong to this one
        if m.greeting is not None or any(x.reply is not None for x in m.exchanges):
            self.new_session(monitor)
            m = self._sessions[monitor].monitor
        m.greeting, m.greeting_t, m.greeting_line = msg, t, line

    def request(self, msg: dict[str, Any], *, t: float | None, monitor: str,
                line: int | None, vm: str | None = None) -> QmpExchange:
        s = self.session(monitor, vm)
        # libvirt numbers its commands per connection: libvirt-1 again means a new connection
        if msg.get("id") == "libvirt-1" and s.monitor.exchanges:
            self.new_session(monitor)
            s = self._sessions[monitor]
        x = QmpExchange(request=msg, reply=None, t=t, monitor=s.monitor.key, line=line)
        s.monitor.exchanges.append(x)
        if "id" in msg:
            s.by_id[id_key(msg["id"])] = x
        if "execute" in msg:
            s.fifo.append(x)
        return x

    def reply(self, msg: dict[str, Any], *, t: float | None, monitor: str,
              line: int | None, vm: str | None = None) -> None:
        s = self.session(monitor, vm)
        x = None
        if "id" in msg:
            x = s.by_id.pop(id_key(msg["id"]), None)
        if x is None and ("id" not in msg or not s.by_id):
            # QEMU answers in-band commands in order; a JSON parse error reply carries no id
            x = s.pop_fifo()
        if x is None:
            if "id" in msg:
                self.warn(line, f"reply with id {json.dumps(msg['id'])} answers no logged command")
            x = QmpExchange(request=None, reply=msg, t=t, monitor=s.monitor.key, line=line)
            s.monitor.exchanges.append(x)
        x.reply, x.t_reply, x.line_reply = msg, t, line
        while s.fifo and s.fifo[0].reply is not None:      # answered by id: no longer pending
            s.fifo.popleft()
        if self.latest_only and x.request is not None:
            s.supersede(x)

    def event(self, msg: dict[str, Any], *, t: float | None, monitor: str,
              line: int | None, vm: str | None = None) -> None:
        s = self.session(monitor, vm)
        if self.latest_only and msg["event"] not in STATE_EVENTS:
            return
        qemu_t = _event_time(msg.get("timestamp"))
        data = msg.get("data")
        if self.latest_only and len(s.monitor.events) >= MAX_KEPT_EVENTS:
            del s.monitor.events[:MAX_KEPT_EVENTS // 2]
        s.monitor.events.append(QmpEvent(
            name=str(msg["event"]), data=data if isinstance(data, dict) else {},
            t=qemu_t if qemu_t is not None else t, monitor=s.monitor.key, line=line,
            t_log=t, raw=msg))

    def finish(self) -> QmpLog:
        """The log, with empty sessions dropped and a count of suppressed warnings."""
        log = self.log
        for s in self._all_sessions:
            s.compact()
        log.monitors = [m for m in log.monitors
                        if m.greeting is not None or m.exchanges or m.events]
        for m in log.monitors:
            if m.vm in self._uuids and m.vm_uuid is None:
                m.vm_uuid = self._uuids[m.vm]
        if self._dropped_warnings:
            log.warnings.append(f"{log.path}: {self._dropped_warnings} more warnings not shown")
        return log


def _event_time(ts: Any) -> float | None:
    """QEMU's event timestamp as Unix seconds; ``None`` when absent or ``-1`` (no host clock)."""
    if not isinstance(ts, dict):
        return None
    sec, usec = ts.get("seconds"), ts.get("microseconds")
    if not isinstance(sec, int) or not isinstance(usec, int) or sec < 0 or usec < 0:
        return None
    return sec + usec / 1e6
