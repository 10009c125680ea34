"""What any QMP log format is read into: exchanges, events and the greeting, per monitor.

Every format reader in this package yields the same records, so the rest of vdecode never knows
which program wrote the log. Messages are kept as parsed JSON (``dict`` in the order the log had).
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from vdecode.frozen import record


@record(frozen=False)
class QmpExchange:
    """One command and its reply.

    :param request: ``{"execute": ..., "arguments": ..., "id": ...}`` as logged; ``None`` when
        only the reply was captured (piped transcripts).
    :param reply: ``{"return": ...}`` or ``{"error": {...}}``; ``None`` when none was logged.
    :param t: when the request (else the reply) was logged, Unix seconds, if the log says.
    :param t_reply: when the reply was logged, if known.
    :param monitor: the monitor/VM key (libvirt ``mon=`` pointer, VM name, ``""`` for one).
    :param line: line number of the request (else the reply) in the log, for messages.
    """

    request: dict[str, Any] | None
    reply: dict[str, Any] | None
    t: float | None = None
    t_reply: float | None = None
    monitor: str = ""
    line: int | None = None
    line_reply: int | None = None        # line number of the reply, when logged

    @property
    def command(self) -> str | None:
        if self.request is None:
            return None
        return self.request.get("execute") or self.request.get("exec-oob")

    @property
    def arguments(self) -> dict[str, Any]:
        if self.request is None:
            return {}
        args = self.request.get("arguments")
        return args if isinstance(args, dict) else {}


@record(frozen=False)
class QmpEvent:
    """An asynchronous event (``{"event": NAME, "data": ..., "timestamp": ...}``)."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    t: float | None = None               # QEMU's timestamp, else the log's time
    monitor: str = ""
    line: int | None = None
    t_log: float | None = None           # when the log wrote it, if the log says
    raw: dict[str, Any] | None = None    # the whole event message as logged


@record(frozen=False)
class LoggedMonitor:
    """One QMP connection/VM found in a log."""

    key: str
    vm: str | None = None                # VM name or UUID when the log says
    vm_uuid: str | None = None           # the VM's UUID when the log gives it besides the name
    greeting: dict[str, Any] | None = None
    greeting_t: float | None = None      # when the greeting was logged, if known
    greeting_line: int | None = None
    exchanges: list[QmpExchange] = field(default_factory=list)
    events: list[QmpEvent] = field(default_factory=list)


@record(frozen=False)
class QmpLog:
    """A whole log: its detected format, its monitors in first-seen order, and warnings."""

    path: str
    format: str
    monitors: list[LoggedMonitor] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def exchanges(self) -> list[QmpExchange]:
        return [x for m in self.monitors for x in m.exchanges]
