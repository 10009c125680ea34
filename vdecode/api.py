"""The public Python API: ``vdecode.open(...)`` gives a :class:`Machine`, the virtio devices at the
dump instant, for a notebook or a drgn/crash-style script (``docs/api.md``).

The machine is built by the same stages as ``vdecode DUMP`` and ``vdecode qmp``
(:func:`~vdecode.sources.qmp_log.read_qmp_log`, :func:`~vdecode.space.open.open_dump`,
:func:`~vdecode.reconstruct.state.session.build_machine`); queues, chains and findings are the view's
(:mod:`vdecode.reconstruct.postmortem.findings`, :mod:`vdecode.reconstruct.postmortem.view_model`), turned into frozen
dataclasses. ``machine.qmp(...)`` asks :func:`~vdecode.reconstruct.state.session.make_monitor`'s monitor,
so its replies are ``vdecode qmp``'s, value for value.

Errors are :class:`~vdecode.errors.VdecodeError` and its subclasses (``docs`` of
:mod:`vdecode.errors`); a QEMU error reply is a reply (``{"error": ...}``), not an exception.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cached_property
from types import MappingProxyType
from typing import Any

from vdecode.errors import VdecodeError
from vdecode.frozen import record

__all__ = ("open", "Machine", "View", "Report", "Selection", "Device", "Queue", "Rings", "Indices", "Chain", "Descriptor",
           "Preview", "UsedEntry", "Finding")

#: the records the machine hands out, declared in vdecode.api_records (imported when first used)
_RECORDS = frozenset({"Device", "Queue", "Rings", "Indices", "Chain", "Descriptor", "Preview",
                      "UsedEntry", "Finding"})


def __getattr__(name: str):
    """``vdecode.api.Device`` and the other records of :mod:`vdecode.api_records` (PEP 562)."""
    if name in _RECORDS:
        import vdecode.api_records

        return getattr(vdecode.api_records, name)
    raise AttributeError(f"module 'vdecode.api' has no attribute {name!r}")


@record
class View:
    """The post-mortem view (``docs/view-json.md``) as one frozen value: ``data`` is the JSON
    document's objects and arrays, immutable; :meth:`to_json` is what ``vdecode DUMP --json``
    prints for the same selection, byte for byte."""

    data: Mapping[str, Any]

    def to_json(self) -> str:
        """The JSON text, newline-terminated, as ``vdecode DUMP --json`` writes it."""
        from vdecode.render.view_json import render_view_json
        return render_view_json(self.data)


@record
class Report:
    """What ``vdecode report`` draws (:meth:`Machine.report`): the view with every selected
    queue's detail, and the QMP replies ``(command, arguments, reply)`` about the selection."""

    view: View
    qmp: tuple[tuple[str, Mapping[str, Any], Mapping[str, Any]], ...]


@record
class Selection:
    """``--device`` and ``--queue`` resolved once against the machine's devices: the devices'
    QOM paths (every device when ``device`` is ``None``) and the queue index, checked to exist.

    :param device: the text the user gave (kept for the view's ``selection`` member).
    """

    device: str | None
    queue: int | None
    paths: tuple[str, ...]


class Machine:
    """The virtio devices of one set of inputs at the dump instant, and an offline QMP monitor
    over them: the one owner of the pipeline every caller (the CLI's commands, the report, the
    API) asks.

    Made by :func:`open`; close it (or use ``with``) to unmap the input. The profile is chosen
    once, when it is made; work happens when a question needs it and is kept: the findings and
    ring walks of a selection, the carving of guest RAM, the frozen answers. :attr:`devices` reads
    every queue's rings once, :meth:`queue` only one.
    """

    def __init__(self, session, notes: list[str], *, paths: tuple[str, ...] = (),
                 logs: tuple[str, ...] = (), progress=None, carve: bool = True) -> None:
        self._session = session                  # reconstruct.state.session.Session: frozen
        self._dump, self._knowledge = session.dump, session.knowledge
        self._profile, self._machine = session.profile, session.machine
        self.notes: list[str] = list(notes)      # how the state was derived (the CLI's "note:" lines)
        self._monitor = None
        self._paths = paths or (self._dump.path,)
        self._logs = logs
        self._progress = progress                # label -> context manager giving a tick
        self._carve = carve                      # False: never scan guest RAM for rings
        self._walks: dict[tuple, tuple] = {}     # (paths or None, queue) -> (findings, walks)

    # -- identity -------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        """The input as it was named."""
        return self._dump.path

    @property
    def format(self) -> str:
        """``elf``, ``kdump``, ``qemu-core``, ``bundle``, ..."""
        return self._dump.format

    @property
    def qemu_state(self) -> str:
        """Where QEMU's state came from: ``core``, ``log``, ``core+log`` or ``none``."""
        return self._machine.state.source or "none"

    @property
    def profile(self):
        """The profile that answers (:class:`vdecode.profiles.Profile`), chosen once, when the
        machine was made."""
        return self._profile

    @property
    def session(self):
        """Every stage's output (:class:`vdecode.reconstruct.state.session.Session`): frozen."""
        return self._session

    @property
    def warnings(self) -> tuple[str, ...]:
        """The log readers' warnings about records they skipped."""
        return self._session.inputs.warnings

    @property
    def absent(self):
        """What the input lacks (:class:`vdecode.space.absence.Absent`: ``incomplete``,
        ``absent_bytes``, ``parts`` with ``kind``, ``reason``, ``ranges``), or ``None`` for a
        whole input. Counted once, when the input was opened."""
        return self._dump.absent

    @property
    def incomplete(self) -> bool:
        """Whether the input lacks bytes it should hold (a dump cut short, pages not written);
        pages left out by design (makedumpfile's dump level) do not make it incomplete."""
        return self._dump.incomplete

    # -- the pipeline's kept work ---------------------------------------------------------------
    def select(self, device: str | None = None, queue: int | None = None) -> Selection:
        """``--device``/``--queue`` resolved once into one :class:`Selection`.

        :raises NotInInput: ``device`` matches nothing or several devices, or no selected device
            has ``queue`` set up (the message lists what is there).
        """
        from vdecode.reconstruct.postmortem.view_model import select_devices, select_queue
        chosen = select_devices(self._machine.state.devices, device)
        select_queue(chosen, queue)            # before reading anything: status 3 and what is there
        return Selection(device, queue, tuple(d.canonical_path for d in chosen))

    def _found(self, paths: frozenset[str] | None, queue: int | None) -> tuple[list, dict]:
        """The findings and ring walks of the devices ``paths`` (every one for ``None``), only
        queue ``queue`` when given: computed once per selection and kept."""
        key = (paths, queue)
        if key not in self._walks:
            from vdecode.reconstruct.postmortem.findings import find_findings
            from vdecode.reconstruct.postmortem.index_motion import log_pace
            s = self._session
            self._walks[key] = find_findings(self._machine, self._profile, s.logged, s.log_end,
                                             devices=paths, queue=queue,
                                             pace=log_pace(s.knowledge))
        return self._walks[key]

    @cached_property
    def carved(self) -> list | None:
        """The rings carved from guest RAM (``rings.kinds.DeviceGroup`` list) when neither a log
        nor a core says where QEMU's rings are (and the machine was made to carve); ``None``
        otherwise. Scanned once."""
        if not self._carve or self._knowledge is not None or self._dump.qemu is not None or self._dump.space is None:
            return None
        from vdecode.reconstruct.rings.match import group_by_device
        from vdecode.virtio.carve import carve_rings
        space = self._dump.space
        if self._progress is None:
            rings = carve_rings(space)
        else:
            with self._progress("scanning guest RAM for rings") as tick:
                rings = carve_rings(space, progress=tick)
        return group_by_device(space, rings)

    def view(self, device: str | None = None, queue: int | None = None, *,
             show_all: bool = False, details: bool = False) -> View:
        """The post-mortem view of ``vdecode DUMP [--device D] [--queue N] [--all]``.

        :param details: a ``queue_detail`` for every selected queue that has a ring, not only
            for ``queue`` (the report draws each one).
        :raises NotInInput: as :meth:`select`.
        """
        from vdecode.frozen import freeze_deep
        from vdecode.reconstruct.postmortem.findings import utc_text
        from vdecode.reconstruct.postmortem.view_model import build_view

        sel = self.select(device, queue)
        findings, walks = self._found(frozenset(sel.paths), queue)
        carved = self.carved
        s = self._session
        view = build_view(self._machine, self._profile, findings, walks,
                          dump_path=" + ".join(self._paths), dump_format=self._dump.format,
                          log_path=self._logs[-1] if self._logs else None, device=device,
                          queue=queue, show_all=show_all,
                          notes=list(s.notes) if carved is None else [],
                          carved=carved, log_end=utc_text(s.log_end), absent=self._dump.absent,
                          details=details)
        return View(freeze_deep(view))

    def report(self, device: str | None = None, queue: int | None = None) -> Report:
        """What ``vdecode report`` draws: the view with every selected queue's detail (every
        chain and used entry), and the QMP replies about the selection (``x-query-virtio``, each
        device's status, each drawn queue's status), asked of a monitor of their own, so
        :meth:`qmp`'s session is not changed.

        :raises NotInInput: as :meth:`select`.
        """
        view = self.view(device, queue, show_all=True, details=True)
        replies: list[tuple[str, Any, Any]] = []
        if self.qemu_state != "none":
            from vdecode.frozen import freeze_deep
            from vdecode.render.qmp_json import encode
            mon = self.monitor()
            mon.handle({"execute": "qmp_capabilities"})

            def ask(command: str, **args: Any) -> None:
                request: dict[str, Any] = {"execute": command}
                if args:
                    request["arguments"] = args
                reply = json.loads(encode(mon.handle(request)))
                replies.append((command, freeze_deep(args), freeze_deep(reply)))
            ask("x-query-virtio")
            for dev in view.data["devices"]:
                ask("x-query-virtio-status", path=dev["path"])
            for d in view.data["queue_detail"]:
                ask("x-query-virtio-queue-status", path=d["device"], queue=d["index"])
        return Report(view, tuple(replies))

    @property
    def stage_findings(self) -> tuple:
        """Every finding as the post-mortem stage made it
        (:class:`~vdecode.reconstruct.postmortem.findings.Finding`), in :attr:`findings`' order:
        what a bundle's ``VDB_FINDINGS`` holds."""
        return tuple(self._found(None, None)[0])

    # -- the view's data as records -------------------------------------------------------------
    def _devices(self, paths: set[str] | None, queue: int | None
                 ) -> tuple[tuple[Device, ...], tuple[Finding, ...]]:
        from vdecode.api_records import Device, Finding, queue_record
        from vdecode.reconstruct.postmortem.view_model import device_view, queue_view

        found, walks = self._found(None if paths is None else frozenset(paths), queue)
        out = []
        for dev in self._machine.state.devices:
            if paths is not None and dev.canonical_path not in paths:
                continue
            info = device_view(self._profile, self._machine.state, dev)
            queues = []
            for qi, q in sorted(dev.queues.items()):
                if queue is not None and qi != queue:
                    continue
                row, detail = queue_view(self._machine, self._profile, dev, q, found, walks)
                queues.append(queue_record(dev.canonical_path, row, detail))
            out.append(Device(dev.canonical_path, dev.name, dev.device_id, info["status"]["value"],
                              tuple(info["status"]["flags"]),
                              None if info["features"] is None else tuple(info["features"]),
                              dev.guest_features, dev.vhost_started, dev.broken, tuple(queues)))
        findings = tuple(Finding(f.severity, f.code, f.device, f.queue, f.title,
                                 MappingProxyType(dict(f.evidence)), f.rule, f.qemu) for f in found)
        return tuple(out), findings

    @cached_property
    def _everything(self) -> tuple[tuple[Device, ...], tuple[Finding, ...]]:
        return self._devices(None, None)

    @property
    def devices(self) -> tuple[Device, ...]:
        """Every device on QEMU's ``virtio_list``, in its order, each with all its queues."""
        return self._everything[0]

    @property
    def findings(self) -> tuple[Finding, ...]:
        """Every finding (errors, then warnings, then info), as ``vdecode DUMP`` lists them."""
        return self._everything[1]

    def evidence(self, code: str | None = None) -> tuple[Finding, ...]:
        """The findings with their evidence (``code``'s only, when given): what ``vdecode DUMP
        -v`` prints under each finding."""
        return tuple(f for f in self.findings if code is None or f.code == code)

    def device(self, which: str) -> Device:
        """The device ``which`` names, as ``--device`` takes it: a QOM path (with or without
        ``/virtio-backend``), a device name (``virtio-net``), an id (``"1"``) or a path component.

        :raises UnsupportedInput: nothing matches, or several devices do (the message lists them).
        """
        path = self.select(which).paths[0]
        return next(d for d in self.devices if d.path == path)

    def queue(self, which: str, index: int) -> Queue:
        """One queue of one device, reading only that queue's rings and chains.

        :raises UnsupportedInput: no such device (or an ambiguous name), or no such queue.
        """
        path = self.select(which).paths[0]
        devices, _ = self._devices({path}, index)
        return devices[0].queue(index)

    # -- QMP ------------------------------------------------------------------------------------
    def identity(self) -> tuple[tuple[int, int, int] | None, str | None]:
        """QEMU's ``(major, minor, micro)`` and package string as the inputs name them (the
        core's, else the log's greeting), ``None`` where they do not."""
        from vdecode.reconstruct.state.session import qemu_identity
        return qemu_identity(self._knowledge, self._dump.qemu)

    def monitor(self, start=None):
        """A new offline QMP monitor (``reconstruct.qmp.monitor.OfflineMonitor``) over the machine
        at the dump instant, or over ``start`` (a previous monitor's machine: ``vdecode qmp
        --socket`` goes on from one connection's state to the next)."""
        from vdecode.reconstruct.state.session import make_monitor
        version, package = self.identity()
        return make_monitor(start if start is not None else self._machine, self._profile,
                            version, package)

    def qmp(self, command: str, **arguments: Any) -> dict[str, Any]:
        """The reply QEMU 7.2's monitor gives to ``command`` with ``arguments``, as at the dump
        instant: ``{"return": ...}`` or ``{"error": {"class": ..., "desc": ...}}``, the value
        ``vdecode qmp`` sends, its dicts' members in the order QEMU writes them.

        One monitor session serves every call (capabilities negotiated on the first), on its own
        copy of QEMU's state, so side effects QEMU's commands have (``shadow_avail_idx``, a device
        marked broken) carry over from call to call as they would live, and never change
        :attr:`devices`.
        """
        if self._monitor is None:
            # the state is frozen: the monitor's side effects make new states, never change ours
            self._monitor = self.monitor()
            self._monitor.handle({"execute": "qmp_capabilities"})
        from vdecode.render.qmp_json import encode
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = dict(arguments)
        reply = self._monitor.handle(request)
        self.notes.extend(self._monitor.take_notes())
        # through QEMU's JSON writer and back: the members in the order the wire has them
        return json.loads(encode(reply))

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Unmap the input files."""
        self._dump.close()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<vdecode.Machine {os.path.basename(self.path)} ({self.format}, QEMU state from " \
               f"{self.qemu_state}{', INCOMPLETE' if self.incomplete else ''})>"


def open(*paths: str | os.PathLike, log: str | os.PathLike | list | tuple | None = None,  # noqa: A001
         log_format: str | None = None, vm: str | None = None,
         cache_dir: str | os.PathLike | None = None, qemu: str | None = None,
         binary: str | os.PathLike | None = None, progress=None) -> Machine:
    """Open a dump (guest ELF or kdump, QEMU process core, bundle) and build its machine: the one
    entry every command of ``vdecode`` goes through too.

    :param paths: the dump, or a QEMU process core and a guest dump of the same instant (any
        order), as ``vdecode qmp CORE GUEST_DUMP`` takes them.
    :param log: a QMP log taken before the dump, or several (oldest first).
    :param log_format: the logs' format when sniffing is not enough (as ``--log-format``).
    :param vm: the VM to take from a log with several (as ``--vm``).
    :param cache_dir: where compressed dumps are decompressed.
    :param qemu: the QEMU release that ran (``"10.0.2"``, as ``--qemu``), for a guest dump alone.
    :param binary: the qemu-system-* executable of a QEMU process core (as ``--binary``).
    :param progress: ``progress(label)`` giving a context manager that yields a
        ``tick(done, total)`` callable (the CLI's progress bars), for decompressing and carving.
    :raises VdecodeError: an input vdecode cannot use (``InputError``, ``CorruptInput``, ...).
    """
    from vdecode.reconstruct.state.session import open_inputs

    if not paths:
        raise TypeError("vdecode.open() needs a dump")
    logs = () if log is None else (log,) if isinstance(log, (str, os.PathLike)) else tuple(log)
    kw = dict(log_format=log_format, vm=vm, cache_dir=cache_dir, binary=binary)
    if progress is None:
        inputs = open_inputs(paths, logs, **kw)
    else:
        with progress("decompressing") as tick:
            inputs = open_inputs(paths, logs, progress=tick, **kw)
    return machine_of(inputs, qemu, paths=tuple(str(p) for p in paths),
                      logs=tuple(str(p) for p in logs), progress=progress)


def machine_of(inputs, qemu: str | None = None, *, carve: bool = True, paths: tuple[str, ...] = (),
               logs: tuple[str, ...] = (), progress=None) -> Machine:
    """The machine of inputs already opened (``reconstruct.state.session.Inputs``): what
    :func:`open` does once the files are open, for the callers that open them their own way
    (triage's per-VM pairing, the bundle writer's recording space).

    :param carve: whether the view may scan guest RAM for rings when nothing says where they
        are; triage and the bundle writer do not (a fleet record and a bundle stay as small and as
        quick as the inputs' own state allows).
    :raises VdecodeError: as :func:`open`; the inputs are closed then.
    """
    from vdecode.reconstruct.state.session import build_session

    try:
        session = build_session(inputs, qemu)
    except VdecodeError:
        inputs.dump.close()
        raise
    absent = inputs.dump.absent
    said = [p.headline()
            for p in (absent.parts if absent is not None else ())]
    return Machine(session, [*said, *(f"warning: {w}" for w in inputs.warnings), *session.notes],
                   paths=paths, logs=logs, progress=progress, carve=carve)
