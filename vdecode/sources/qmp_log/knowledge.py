"""What one VM's QMP log says: the newest reply per (command, arguments), the QEMU version, the
time span, and what happened after a given time.

This is the view the reconstruction asks: "what did ``x-query-virtio-status`` for this path last
return, and was the VM stopped, reset or hot-unplugged since?"
"""

from __future__ import annotations

import json
from typing import Any

from vdecode.errors import QmpLogError
from vdecode.sources.qmp_log.model import QmpEvent, QmpExchange, QmpLog, LoggedMonitor

__all__ = ("LogKnowledge", "STATE_EVENTS", "arguments_key", "describe_monitor", "select_monitors")

# Events after which a reply taken earlier may no longer describe the device (QEMU 7.2 qapi/run-state.json,
# qapi/qdev.json, qapi/virtio.json-adjacent events); ``events_since`` returns all events, these are
# the ones ``state_events_since`` keeps.
STATE_EVENTS = frozenset({
    "STOP", "RESUME", "RESET", "SHUTDOWN", "POWERDOWN", "SUSPEND", "WAKEUP", "GUEST_PANICKED",
    "GUEST_CRASHLOADED", "DEVICE_DELETED", "DEVICE_UNPLUG_GUEST_ERROR", "NIC_RX_FILTER_CHANGED",
    "VSERPORT_CHANGE", "BALLOON_CHANGE", "MEMORY_DEVICE_SIZE_CHANGE", "FAILOVER_NEGOTIATED",
})


def arguments_key(arguments: dict[str, Any] | None) -> str:
    """A key equal for equal JSON argument objects; ``None`` and ``{}`` are the same.

    >>> arguments_key({"queue": 1, "path": "/p"}) == arguments_key({"path": "/p", "queue": 1})
    True
    >>> arguments_key(None) == arguments_key({})
    True
    """
    return json.dumps(arguments or {}, sort_keys=True, separators=(",", ":"))


def describe_monitor(m: LoggedMonitor) -> str:
    """``guest1 (monitor 0x7f.., 12 exchanges, 1 events)``: how a monitor is named in messages."""
    uuid = f" {m.vm_uuid}" if m.vm_uuid else ""
    who = f"{m.vm}{uuid} (monitor {m.key}, " if m.vm else f"monitor {m.key or '(unnamed)'} ("
    return f"{who}{len(m.exchanges)} exchanges, {len(m.events)} events)"


def select_monitors(log: QmpLog, vm: str) -> list[LoggedMonitor]:
    """The monitors of ``vm`` (VM name, UUID, or monitor key, with or without its ``#N``).

    :raises QmpLogError: when nothing matches; the message lists the VMs found.
    """
    found = [m for m in log.monitors
             if vm in (m.vm, m.vm_uuid, m.key, m.key.split("#")[0])]
    if not found:
        listing = "; ".join(describe_monitor(m) for m in log.monitors) or "no monitors"
        raise QmpLogError(log.path, f"no VM or monitor {vm!r} in this log; found: {listing}")
    return found


class LogKnowledge:
    """Facts from the QMP traffic of one VM (one monitor session).

    :param monitor: the session, e.g. from :meth:`from_log`.
    """

    def __init__(self, monitor: LoggedMonitor) -> None:
        self.monitor = monitor
        self._latest: dict[tuple[str, str], QmpExchange] = {}
        self._by_command: dict[str, list[QmpExchange]] = {}
        for x in monitor.exchanges:
            cmd = x.command
            if cmd is None:
                continue
            self._by_command.setdefault(cmd, []).append(x)
            if x.reply is not None:
                self._latest[(cmd, arguments_key(x.arguments))] = x

    @classmethod
    def from_log(cls, log: QmpLog, vm: str | None = None) -> LogKnowledge:
        """The knowledge of the one VM in ``log`` (or of ``vm``).

        With several sessions of the same VM (a restart), the last one is used. A log with several
        VMs needs ``vm`` when more than one of them has virtio traffic (or, if none has, traffic).

        :raises QmpLogError: when the log has no monitor, ``vm`` matches none, or the choice is
            ambiguous; the message lists the VMs found.
        """
        monitors = select_monitors(log, vm) if vm is not None else log.monitors
        if not monitors:
            raise QmpLogError(log.path, "no QMP traffic in this log")
        groups: dict[str, list[LoggedMonitor]] = {}
        for m in monitors:
            groups.setdefault(m.vm or m.key.split("#")[0], []).append(m)
        virtio = [g for g, ms in groups.items()
                  if any((x.command or "").startswith("x-query-virtio")
                         for m in ms for x in m.exchanges)]
        busy = virtio or [g for g, ms in groups.items() if any(m.exchanges for m in ms)] \
            or list(groups)
        if len(busy) > 1:
            listing = "; ".join(describe_monitor(groups[g][-1]) for g in busy)
            raise QmpLogError(log.path, f"{len(busy)} VMs in this log, choose one with --vm: "
                                        f"{listing}")
        sessions = [m for m in groups[busy[0]] if m.exchanges] or groups[busy[0]]
        return cls(sessions[-1])

    # -- replies ---------------------------------------------------------------------------------

    def latest(self, command: str, arguments: dict[str, Any] | None = None) -> QmpExchange | None:
        """The newest exchange with a reply for ``command`` with exactly these arguments."""
        return self._latest.get((command, arguments_key(arguments)))

    def all(self, command: str) -> list[QmpExchange]:
        """Every exchange of ``command`` in log order (unanswered ones included)."""
        return list(self._by_command.get(command, ()))

    def commands(self) -> list[str]:
        """The commands seen, in first-seen order."""
        return list(self._by_command)

    # -- greeting --------------------------------------------------------------------------------

    @property
    def qemu_version(self) -> tuple[int, int, int] | None:
        """``(major, minor, micro)`` from the greeting (else a ``query-version`` reply)."""
        v = self._version()
        q = v.get("qemu") if v else None
        if not isinstance(q, dict):
            return None
        parts = (q.get("major"), q.get("minor"), q.get("micro"))
        if not all(isinstance(p, int) for p in parts):
            return None
        return parts  # type: ignore[return-value]

    @property
    def qemu_package(self) -> str | None:
        """The greeting's ``package`` string (``"Debian 1:7.2+dfsg-7+deb12u18+b3"``)."""
        v = self._version()
        p = v.get("package") if v else None
        return p if isinstance(p, str) else None

    def _version(self) -> dict[str, Any] | None:
        g = self.monitor.greeting
        if isinstance(g, dict) and isinstance(g.get("QMP"), dict):
            v = g["QMP"].get("version")
            if isinstance(v, dict):
                return v
        x = self.latest("query-version")
        if x is not None and isinstance(x.reply, dict) and isinstance(x.reply.get("return"), dict):
            return x.reply["return"]
        return None

    # -- time ------------------------------------------------------------------------------------

    @property
    def span(self) -> tuple[float | None, float | None]:
        """``(first, last)`` time the log gives for this VM's traffic; ``None`` where unknown."""
        times = [t for t in self._times() if t is not None]
        return (min(times), max(times)) if times else (None, None)

    def _times(self):
        m = self.monitor
        yield m.greeting_t
        for x in m.exchanges:
            yield x.t
            yield x.t_reply
        for e in m.events:
            yield e.t_log if e.t_log is not None else e.t

    def events_since(self, t: float | None, names: frozenset[str] | set[str] | None = None
                     ) -> list[QmpEvent]:
        """Events at or after ``t`` (all if ``t`` is ``None``), optionally only these names.

        An event's time is QEMU's own timestamp, else the time the log wrote it.
        """
        out = []
        for e in self.monitor.events:
            if names is not None and e.name not in names:
                continue
            et = e.t if e.t is not None else e.t_log
            if t is None or (et is not None and et >= t):
                out.append(e)
        return out

    def state_events_since(self, t: float | None) -> list[QmpEvent]:
        """:meth:`events_since` limited to :data:`STATE_EVENTS` (run state, reset, unplug...)."""
        return self.events_since(t, STATE_EVENTS)

    def virtio_devices(self) -> list[tuple[str | None, str]]:
        """``(name, QOM path)`` of the virtio devices the traffic shows, first-seen order.

        From ``x-query-virtio`` replies, the ``path`` of ``x-query-virtio-*`` commands QEMU did
        not refuse (name from their reply when it has one) and events about a ``.../virtio-backend`` path
        (``DEVICE_DELETED``, ``NIC_RX_FILTER_CHANGED``).
        """
        seen: dict[str, str | None] = {}
        for x in self.monitor.exchanges:
            cmd = x.command or ""
            ret = x.reply.get("return") if isinstance(x.reply, dict) else None
            if cmd == "x-query-virtio" and isinstance(ret, list):
                for d in ret:
                    if isinstance(d, dict) and isinstance(d.get("path"), str):
                        name = d.get("name")
                        seen[d["path"]] = name if isinstance(name, str) else seen.get(d["path"])
            elif cmd.startswith("x-query-virtio") and isinstance(x.arguments.get("path"), str) \
                    and not (isinstance(x.reply, dict) and "error" in x.reply):
                path = x.arguments["path"]
                name = ret.get("name") if isinstance(ret, dict) else None
                if isinstance(name, str) or path not in seen:
                    seen[path] = name if isinstance(name, str) else seen.get(path)
        for e in self.monitor.events:
            path = e.data.get("path")
            if isinstance(path, str) and path.endswith("/virtio-backend"):
                seen.setdefault(path, None)
        return [(name, path) for path, name in seen.items()]

    def events_after(self, x: QmpExchange) -> list[QmpEvent]:
        """Events logged after ``x``'s reply (by line: works for logs without times)."""
        after = x.line_reply if x.line_reply is not None else x.line
        if after is None:
            return []
        return [e for e in self.monitor.events if e.line is not None and e.line > after]

    def exchanges_since(self, t: float | None, command: str | None = None) -> list[QmpExchange]:
        """Exchanges logged at or after ``t`` (e.g. later ``x-query-virtio-queue-element``)."""
        xs = self.monitor.exchanges if command is None else self._by_command.get(command, [])
        return [x for x in xs if t is None or (x.t is not None and x.t >= t)]
