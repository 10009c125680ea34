"""The bug-report bundle: one small ELF core that reproduces vdecode's answers elsewhere.

:func:`write_bundle` keeps the guest pages the answers rest on
(:mod:`vdecode.reconstruct.postmortem.evidence`) as PT_LOADs by guest-physical address, and the rest as
``VDECODE`` notes: provenance (``VDB_META``), the QMP log as the captures' JSON lines
(``VDB_QMP_LOG``), QEMU's own virtio state from a process core (``VDB_QEMU_STATE``), findings
(``VDB_FINDINGS``, when :mod:`vdecode.reconstruct.postmortem.findings` is there) and a summary for people
(``VDB_SUMMARY``). ``docs/bundle.md`` is the format's reference; :mod:`vdecode.sources.bundle_notes`
and :mod:`vdecode.space.bundle_space` read it back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path
from typing import Any

from vdecode.errors import MissingData, OutputError
from vdecode.frozen import record
from vdecode.reconstruct.postmortem.evidence import (HEADER_BYTES, KeepPlan, RecordingSpace,
                                          carved_evidence, clip, plan_kept_memory,
                                          sweep_queries)
from vdecode.reconstruct.state.session import Inputs
from vdecode.render.elf_core import EM_X86_64, LoadSegment, write_elf_core
from vdecode.render.log_view import render_log_jsonl
from vdecode.sources.bundle_notes import (BUNDLE_VERSION, NOTE_OWNER, VDB_FINDINGS, VDB_META,
                                    VDB_QEMU_STATE, VDB_QMP_LOG, VDB_SUMMARY)
from vdecode.sources.elf_dump import EM_NAMES, UTS_MACHINES
from vdecode.sources.qemu_state import QemuVirtioState
from vdecode.sources.qmp_log.knowledge import LogKnowledge
from vdecode.sources.qmp_log.model import QmpLog
from vdecode.space.base import AddressSpace, Gpa
from vdecode.space.dump import Dump
from vdecode.space.ram_map import RamMap, merge_spans

__all__ = ("write_bundle", "recording", "state_to_json", "BundleReport")

PAGE = 4096


@record
class BundleReport:
    """What :func:`write_bundle` wrote: the file's size, kept bytes, and what bounds left out."""

    path: Path
    size: int
    kept_bytes: int
    runs: int
    counts: dict[str, int]
    limits: list[str]
    notes: list[str]


def state_to_json(state: QemuVirtioState) -> dict[str, Any]:
    """:class:`QemuVirtioState` as the ``VDB_QEMU_STATE`` JSON (``docs/bundle.md``).

    Dict-keyed members become lists carrying their key (``queues[].queue_index``,
    ``vhost_dev.vqs[].index``), sets sorted lists, tuples lists.
    """
    def device(d) -> dict[str, Any]:
        out = {f.name: getattr(d, f.name) for f in dataclasses.fields(d)
               if f.name not in ("queues", "absent_queues", "vhost_dev", "provenance")}
        out["queues"] = [dataclasses.asdict(q) for _, q in sorted(d.queues.items())]
        out["absent_queues"] = sorted(d.absent_queues)
        out["provenance"] = dict(d.provenance)
        if d.vhost_dev is None:
            out["vhost_dev"] = None
        else:
            v = d.vhost_dev
            out["vhost_dev"] = {f.name: getattr(v, f.name) for f in dataclasses.fields(v)
                                if f.name != "vqs"}
            out["vhost_dev"]["vqs"] = [dict(index=i, **dataclasses.asdict(x))
                                       for i, x in sorted(v.vqs.items())]
        return out

    return {"devices": [device(d) for d in state.devices],
            "qemu_version": list(state.qemu_version) if state.qemu_version else None,
            "package": state.package, "source": state.source,
            **({"labels": [list(x) for x in state.labels], "labels_from": state.labels_from}
               if state.labels else {})}


def _vdecode_version() -> str:
    try:
        return package_version("vdecode")
    except PackageNotFoundError:
        return "unknown"


def _file_facts(path: str, fmt: str | None) -> dict[str, Any]:
    try:
        size = os.stat(path).st_size
    except OSError:
        size = None
    return {"file": os.path.basename(path), "format": fmt, "size": size}


def recording(inputs: Inputs) -> Inputs:
    """``inputs`` with the dump read through a :class:`RecordingSpace`: what the machine a bundle
    is written from is made over (``vdecode.api.machine_of(recording(inputs), carve=False)``), so
    that the bundle keeps the guest pages its answers read."""
    space = inputs.dump.space
    return _reading_through(inputs, RecordingSpace(space) if space is not None else None)


def write_bundle(out: str | os.PathLike, machine, *, header_bytes: int = HEADER_BYTES,
                 full_buffers: bool = False, redact: bool = False,
                 vm: str | None = None) -> BundleReport:
    """Write the bundle of ``machine`` (a :class:`vdecode.api.Machine` made over
    :func:`recording` inputs: the dump, and the QMP log's knowledge if any, embedded as
    ``VDB_QMP_LOG``) to ``out``. The machine computed the answers; this only asks it (every QMP
    question once, the view) and writes the pages those answers read.

    :param header_bytes: bytes kept at the start of each pending/in-flight buffer.
    :param full_buffers: keep whole buffers (each and all bounded) instead of their headers.
    :param redact: write buffer payloads as zeros (device request headers stay), ring areas
        exactly instead of whole pages.
    :raises VdecodeError: when the origin cannot be read where the bundle needs it.
    :return: a :class:`BundleReport`.
    """
    out = Path(out)
    session = machine.session
    dump, knowledge, logs = session.dump, session.knowledge, list(session.inputs.logs)
    qemu_json = state_to_json(dump.qemu) if dump.qemu is not None else None
    recorder = dump.space
    if recorder is not None and not isinstance(recorder, RecordingSpace):
        raise TypeError("write_bundle needs a machine made over recording(inputs)")
    space = recorder.inner if recorder is not None else None
    vm_state, notes, profile = session.machine, list(session.notes), session.profile
    if dump.absent is not None:       # first: the bundle stands for an input that lacked bytes
        notes = [p.headline()
                 for p in dump.absent.parts] + notes
    findings = None
    if space is None:
        plan = KeepPlan()
    else:
        # what every answer reads (building the machine, then each question once), kept as is
        sweep_queries(vm_state, profile)
        reads = list(recorder.reads)
        if recorder.scanned:
            reads = [*reads, *carved_evidence(space, dump.guest_little_endian)]
        plan = plan_kept_memory(vm_state, space, header_bytes=header_bytes,
                                full_buffers=full_buffers, redact=redact, recorded=reads)
    summary = _summary(dump, knowledge, vm_state, plan, notes)
    if space is not None:
        findings, view_reads = _view_pass(machine, recorder)
        # What the view reads beyond the answers' needs is buffer bytes: kept, and redactable.
        ram = RamMap.of(space).pairs()
        plan.buffers = clip(merge_spans([*plan.buffers, *view_reads]), ram)
        if redact:
            plan.redact = clip(merge_spans([*plan.redact, *view_reads]), ram)
    segments = _segments(space, plan) if space is not None else []
    kept = sum(len(s.data) for s in segments)

    origin = _file_facts(dump.path, dump.format)
    origin["ram_ranges"] = [[int(s), int(z)] for s, z in space.ranges()] if space is not None else []
    if dump.absent is not None:       # remembered: answers from the bundle still say so
        origin["absent"] = dump.absent.to_json()
    meta = {
        "format": "vdecode-bundle",
        "bundle_version": BUNDLE_VERSION,
        "vdecode_version": _vdecode_version(),
        "created": _created(),
        "origin": origin,
        "logs": [_file_facts(p, f) for p, f in logs],
        "vm": vm,
        "options": {"header_bytes": header_bytes, "full_buffers": full_buffers, "redact": redact},
        "kept": {"bytes": kept, "runs": len(segments), **plan.counts},
        "limits": plan.limits[:100],
    }
    notes_out: list[tuple[str, int, bytes]] = [(NOTE_OWNER, VDB_META, _dumps(meta))]
    if knowledge is not None:
        log = QmpLog(path=os.path.basename(logs[-1][0]) if logs else "log", format="jsonl",
                     monitors=[knowledge.monitor])
        notes_out.append((NOTE_OWNER, VDB_QMP_LOG, "".join(render_log_jsonl(log)).encode()))
    if qemu_json is not None:
        notes_out.append((NOTE_OWNER, VDB_QEMU_STATE, _dumps(qemu_json)))
    if findings is not None:
        notes_out.append((NOTE_OWNER, VDB_FINDINGS, _dumps(findings)))
    notes_out.append((NOTE_OWNER, VDB_SUMMARY, summary.encode()))
    # the guest's e_machine: an ELF dump names it by EM_NAMES, a kdump by its utsname (QEMU
    # writes "S390X" for s390x, "Unknown" where its target defines no ELF_MACHINE_UNAME)
    machine = str(dump.info.get("machine")).lower()
    machine_id = {v: k for k, v in EM_NAMES.items()}.get(UTS_MACHINES.get(machine, machine),
                                                         EM_X86_64)
    try:
        write_elf_core(out, segments, notes=notes_out, qemu_quirks=False, machine=machine_id)
    except OSError as err:                          # checked up front, so: a full disk, a quota
        out.unlink(missing_ok=True)                 # no half bundle that looks like one
        raise OutputError(str(out), f"cannot write the bundle: {err.strerror or err}") from None
    return BundleReport(out, out.stat().st_size, kept, len(segments), plan.counts, plan.limits,
                        notes)


def _created() -> str:
    """Now, or ``SOURCE_DATE_EPOCH`` (reproducible-builds.org) so a bundle can be remade bit-exact."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    when = (datetime.fromtimestamp(int(epoch), timezone.utc) if epoch.isdigit()
            else datetime.now(timezone.utc))
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=None, separators=(",", ":")).encode()


def _segments(space: AddressSpace, plan: KeepPlan) -> list[LoadSegment]:
    """The kept runs' bytes, buffer payloads zeroed under ``--redact``."""
    segs = []
    for lo, hi in merge_spans([*plan.needed, *plan.buffers]):
        for s, data in _read_present(space, lo, hi):
            buf = bytearray(data)
            e = s + len(buf)
            for rs, re_ in plan.redact:
                a, b = max(rs, s), min(re_, e)
                if b > a:
                    buf[a - s:b - s] = bytes(b - a)
            for ns, ne in plan.needed:            # needed bytes win over redaction
                a, b = max(ns, s), min(ne, e)
                if b > a and plan.redact:
                    buf[a - s:b - s] = bytes(space.read(Gpa(a), b - a))
            segs.append(LoadSegment(s, bytes(buf)))
    return segs


def _read_present(space: AddressSpace, lo: int, hi: int):
    """``(start, bytes)`` pieces of ``[lo, hi)`` the space holds (excluded pages skipped)."""
    try:
        return [(lo, bytes(space.read(Gpa(lo), hi - lo)))]
    except MissingData:
        pass
    pieces: list[tuple[int, bytes]] = []
    pos = lo
    while pos < hi:
        end = min(hi, (pos // PAGE + 1) * PAGE)
        try:
            data = bytes(space.read(Gpa(pos), end - pos))
        except MissingData:
            pos = end
            continue
        if pieces and pieces[-1][0] + len(pieces[-1][1]) == pos:
            pieces[-1] = (pieces[-1][0], pieces[-1][1] + data)
        else:
            pieces.append((pos, data))
        pos = end
    return pieces


def _reading_through(inputs: Inputs, space: AddressSpace | None) -> Inputs:
    """``inputs`` with the dump read through ``space`` (a :class:`RecordingSpace`)."""
    if space is None:
        return inputs
    return dataclasses.replace(inputs, dump=dataclasses.replace(inputs.dump, space=space))


def _view_pass(machine, recorder: RecordingSpace) -> tuple[list, list[tuple[int, int]]]:
    """Findings as JSON and the guest memory the post-mortem view reads beyond the QMP answers
    (buffer previews): what the recorder gets while the machine computes its findings and view,
    told apart from the answers' reads (they are buffer bytes, kept and redactable)."""
    start = len(recorder.reads)
    findings = machine.stage_findings
    machine.view(show_all=True)
    return [dataclasses.asdict(f) for f in findings], recorder.reads[start:]


def _summary(dump: Dump, knowledge: LogKnowledge | None, machine, plan: KeepPlan,
             notes: list[str]) -> str:
    """A few lines for people: origin, devices, and each queue's pending/in-flight counts."""
    lines = [f"vdecode bundle of {os.path.basename(dump.path)} ({dump.format})"
             + (f" with a QMP log ({len(knowledge.monitor.exchanges)} exchanges)" if knowledge
                else "")]
    lines.append(f"QEMU state from: {machine.state.source or 'nothing'}")
    facts = {(q.path, q.queue): q for q in plan.queues}
    for dev in machine.state.devices:
        status = f"{dev.status:#04x}" if dev.status is not None else "?"
        lines.append(f"{dev.canonical_path}  {dev.name or '?'}  status {status}"
                     + ("  BROKEN" if dev.broken else ""))
        for qn in sorted(dev.queues):
            q = dev.queues[qn]
            f = facts.get((dev.canonical_path, qn))
            if f is None or f.avail_idx is None:
                lines.append(f"  queue {qn}: num {q.vring_num}  (ring not read)")
                continue
            last = q.last_avail_idx
            pending = (f.avail_idx - last) & 0xFFFF if last is not None else None
            inflight = (last - f.used_idx) & 0xFFFF if last is not None else None
            lines.append(f"  queue {qn}: num {f.num}  avail.idx {f.avail_idx}  used.idx "
                         f"{f.used_idx}  last_avail_idx {last}  pending {pending}  "
                         f"in flight {inflight}")
    lines += [f"note: {n}" for n in notes] + [f"left out: {x}" for x in plan.limits[:20]]
    return "\n".join(lines) + "\n"
