"""The recorder's loop: a snapshot of the virtio state every ``interval`` seconds, events between.

A snapshot asks, in this order and only where ``formats/qemu-*/record.json`` allows it:
``query-status`` (is the VM running: some questions are unsafe only then), ``x-query-virtio``,
then per device its QOM type (``qom-get``, the first time a device is seen: a vhost-user device is
spared even before its back-end starts), ``x-query-virtio-status``, ``x-query-virtio-queue-status`` of each queue and, for
a device with a started vhost back-end, ``x-query-virtio-vhost-queue-status`` of each queue.
Where ``x-query-virtio-status`` is not asked (QEMU 11.1.x), the queues are counted by asking
``x-query-virtio-queue-status`` up to its first error, and a started vhost back-end is found by
``x-query-virtio-vhost-queue-status`` of queue 0 (it errors "has not started yet" otherwise).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from vdecode.errors import VdecodeError
from vdecode.frozen import record
from vdecode.record.monitor import Monitor, QemuGone, Record
from vdecode.record.questions import Questions, questions_for
from vdecode.record.rolling import RollingLog

#: QEMU's VIRTIO_QUEUE_MAX: no device has more queues (the count-by-asking loop stops there)
QUEUE_MAX = 1024


@record
class Outcome:
    """How a recording ended."""

    snapshots: int
    last: float | None            # the time the last complete snapshot was written
    why: str                      # "SIGTERM", "QEMU went away", "3 snapshots taken"
    files: tuple[str, ...]        # oldest first
    rotations: int
    release: str                  # the questions table used


class Recorder:
    """:param say: the recorder's own log (one line each, without the ``vdecode:`` prefix)."""

    def __init__(self, monitor: Monitor, log: RollingLog, say: Callable[[str], None]) -> None:
        self.monitor, self.log, self.say = monitor, log, say
        self._ids = itertools.count(1)
        self._said: set[tuple[str, str]] = set()
        self._said_rules: set = set()
        self._types: dict[str, str] = {}        # QOM type of each device path (qom-get)
        self.version: tuple[int, int, int] | None = None
        self.questions: Questions | None = None

    # -- start -------------------------------------------------------------------------------

    def start(self) -> Questions:
        """Write the header (greeting, handshake, version) and choose the questions."""
        header: list[Record] = [self.monitor.greeting] if self.monitor.greeting else []
        header += getattr(self.monitor, "handshake", [])
        reply = self.monitor.execute({"execute": "query-version", "id": next(self._ids)})
        header += reply
        q = reply[-1][2].get("return", {}).get("qemu", {})
        if all(isinstance(q.get(k), int) for k in ("major", "minor", "micro")):
            self.version = (q["major"], q["minor"], q["micro"])
        self.log.start(header)
        self.questions = questions_for(self.version)
        return self.questions

    # -- one snapshot ------------------------------------------------------------------------

    def snapshot(self) -> list[Record]:
        """Every allowed question once; the records of the whole snapshot."""
        recs: list[Record] = []

        def ask(command: str, **arguments: Any) -> dict:
            msg: dict[str, Any] = {"execute": command, "id": next(self._ids)}
            if arguments:
                msg["arguments"] = arguments
            out = self.monitor.execute(msg)
            recs.extend(out)
            return out[-1][2]

        q = self.questions
        assert q is not None
        running = True
        if q.allowed("query-status"):
            running = bool(ask("query-status").get("return", {}).get("running", True))
        devices = ask("x-query-virtio").get("return", [])
        for dev in devices if isinstance(devices, list) else []:
            self._device(ask, dev.get("path", ""), dev.get("name", ""), running)
        return recs

    def _device(self, ask, path: str, name: str, running: bool) -> None:
        q = self.questions
        # a vhost-user-blk is named "virtio-blk" by x-query-virtio: its QOM type says vhost
        # ("vhost-user-blk"), started or not; asked once a device
        if path not in self._types and q.allowed("qom-get"):
            self._types[path] = str(ask("qom-get", path=path, property="type").get("return", ""))
        vhost = "vhost" in self._types.get(path, "")
        num: int | None = None
        probe: dict | None = None               # queue 0's vhost reply, when asked already
        if self._may(q, "x-query-virtio-status", path, name, vhost, running):
            ret = ask("x-query-virtio-status", path=path).get("return")
            if isinstance(ret, dict):
                num = ret.get("num-vqs")
                vhost = vhost or bool(ret.get("vhost-started"))
        elif q.allowed("x-query-virtio-vhost-queue-status"):
            probe = ask("x-query-virtio-vhost-queue-status", path=path, queue=0)
            vhost = vhost or "return" in probe
        status_ok = self._may(q, "x-query-virtio-queue-status", path, name, vhost, running)
        vhost_ok = vhost and q.allowed("x-query-virtio-vhost-queue-status")
        for n in range(num if isinstance(num, int) else QUEUE_MAX):
            answered = False
            if status_ok:
                answered = "return" in ask("x-query-virtio-queue-status", path=path, queue=n)
            if vhost_ok:
                vreply = probe if n == 0 and probe is not None else \
                    ask("x-query-virtio-vhost-queue-status", path=path, queue=n)
                answered = answered or "return" in vreply
            if num is None and not answered:
                break                           # counting by asking: the first error ends it

    def _may(self, q: Questions, command: str, path: str, name: str, vhost: bool,
             running: bool) -> bool:
        rule = q.spared(command, vhost=vhost, running=running)
        if rule is None:
            return True
        if (path, command) not in self._said:   # once per device and question, not per snapshot
            self._said.add((path, command))
            qom = self._types.get(path, "")
            state = ", ".join(x for x in (name, f"QOM type {qom}" if "vhost" in qom else
                                          "vhost started" if vhost else "",
                                          "VM running" if running and rule.vm == "running"
                                          else "") if x)
            why = rule.why if rule not in self._said_rules else "as above"
            self._said_rules.add(rule)
            self.say(f"not asking {command} of {path} ({state}): {why}")
        return False

    # -- the loop ----------------------------------------------------------------------------

    def run(self, interval: float, stop: Callable[[], str | None],
            snapshots: int | None = None) -> Outcome:
        """Snapshots until ``stop()`` names a reason, QEMU goes away or ``snapshots`` are taken."""
        taken, last, why = 0, None, ""
        try:
            if self.questions is None:
                self.start()
            due = time.monotonic()
            while True:
                why = stop() or ""
                if why:
                    break
                if time.monotonic() >= due:
                    recs = self.snapshot()
                    if stop():                  # a signal mid-snapshot: end on the last whole one
                        why = stop() or ""
                        break
                    self.log.append(recs, snapshot=True)
                    taken, last = taken + 1, recs[-1][0] if recs else time.time()
                    if snapshots is not None and taken >= snapshots:
                        why = f"{taken} snapshot{'s' if taken != 1 else ''} taken"
                        break
                    due += interval
                    if due < time.monotonic():  # a slow snapshot: the next one is not rushed
                        due = time.monotonic() + interval
                events = self.monitor.events(min(0.25, max(0.0, due - time.monotonic())))
                if events:
                    self.log.append(events, snapshot=False)
        except QemuGone:
            why = "QEMU went away (the monitor closed)"
        except VdecodeError:
            if not stop():                      # a signal also reaches virsh: that is the stop
                raise
            why = stop() or ""
        return Outcome(taken, last, why, tuple(self.log.files()), self.log.rotations,
                       self.questions.release if self.questions else "")
