"""One VM's triage record, built in a worker from a :class:`~vdecode.triage.discover.VmJob`.

The record is what ``vdecode DUMP --log LOG... --json`` would show, condensed: it asks the same
machine (:func:`vdecode.api.machine_of`, made not to carve) and keeps, per device and queue, the state and the findings. The
worst finding is the first of ``find_findings``' order (errors, then warnings; info findings
are not problems), and a queue's state is the view's ``health``.

Every value is plain JSON in a fixed key order, with paths as the user gave them and no time of
the run, so the records of a local run and of a Dask run are equal.

An input that cannot be read becomes an ``errors`` entry (``VdecodeError``: the input's fault),
and the next candidate is tried: one bad file never stops the run. Any other exception is a
vdecode bug; triage still records it (class ``bug``, with the innermost frame) rather than losing
the other VMs' records, which is the one place vdecode catches more than ``VdecodeError``.
"""

from __future__ import annotations

import dataclasses
import traceback
from typing import TYPE_CHECKING, Any

from vdecode.errors import VdecodeError
from vdecode.triage.discover import VmJob

if TYPE_CHECKING:
    from vdecode.reconstruct.postmortem.records import Finding, View

__all__ = ("triage_vm", "triage_step", "triage_part", "failed_record", "preload", "SCHEMA_VERSION",
           "verdict_of")

SCHEMA_VERSION = 1


def _error(path: str | None, err: BaseException) -> dict[str, Any]:
    if isinstance(err, VdecodeError):
        return {"input": path, "class": type(err).__name__, "message": str(err)}
    if isinstance(err, OSError):
        return {"input": path, "class": "OSError", "message": f"{path}: {err.strerror or err}"}
    frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    where = f" ({frame.filename.rsplit('vdecode/', 1)[-1]}:{frame.lineno})" if frame else ""
    return {"input": path, "class": "bug",
            "message": f"vdecode bug{where}: {type(err).__name__}: {err}"}


def _read_logs(job: VmJob, errors: list, warnings: list):
    """The merged knowledge of the job's logs (oldest first by their first record), and the logs
    used."""
    from vdecode.reconstruct.state.session import merge_knowledge
    from vdecode.sources.qmp_log import LogKnowledge, read_qmp_log

    read = []
    for path in job.logs:
        try:
            log = read_qmp_log(path, None, None, latest_only=True)
            vms = {m.vm for m in log.monitors if m.vm}
            vm = job.vm if len(vms) > 1 and job.vm in vms else None   # libvirt: several VMs
            k = LogKnowledge.from_log(log, vm)
        except (VdecodeError, OSError, UnicodeError) as err:
            errors.append(_error(path, err))
            continue
        except Exception as err:                    # noqa: BLE001 - see the module docstring
            errors.append(_error(path, err))
            continue
        warnings.extend(log.warnings[:8])
        start = k.span[0]
        read.append((start if start is not None else float("inf"), path, k))
    read.sort(key=lambda t: (t[0], t[1]))
    return merge_knowledge([k for _, _, k in read]), [p for _, p, _ in read]


def _open(job: VmJob, errors: list):
    """``(dump, memory path or None, unused)``: the first dump that opens; a QEMU core without
    guest RAM takes the guest memory of the next guest dump that opens."""
    from vdecode.space.open import open_dump

    primary = memory = None
    unused = []
    for path, _ in job.dumps:
        if primary is not None and (primary.space is not None or memory is not None):
            unused.append({"path": path, "reason": f"same VM: {primary.path} is used"})
            continue
        try:
            d = open_dump(path, cache_dir=job.cache_dir)
        except (VdecodeError, OSError) as err:
            errors.append(_error(path, err))
            continue
        except Exception as err:                    # noqa: BLE001 - see the module docstring
            errors.append(_error(path, err))
            continue
        if primary is None:
            primary = d
        elif d.space is not None and d.qemu is None:
            memory = d
        else:
            d.close()
            unused.append({"path": path, "reason": f"same VM: {primary.path} is used"})
    if primary is not None and memory is not None:
        from vdecode.space.dump import combine
        try:           # the check `vdecode qmp CORE GUEST_DUMP` makes: one VM at one instant
            combined = combine(primary, memory)
        except VdecodeError as err:
            errors.append(_error(memory.path, err))
            memory.close()
            return primary, None, unused
        # the record names the core's format, as for a core with its own guest RAM
        return dataclasses.replace(combined, format=primary.format), memory.path, unused
    return primary, None, unused


def _view(opened, knowledge, log_path: str | None) -> tuple[View, str]:
    """The view of ``vdecode DUMP`` from the one machine every command builds
    (:func:`vdecode.api.machine_of`, made not to carve: a record rests on the inputs' own state),
    and the profile's version."""
    from vdecode.api import machine_of
    from vdecode.reconstruct.state.session import Inputs

    machine = machine_of(Inputs(opened, knowledge), logs=(log_path,) if log_path else (),
                         carve=False)
    return machine.view(), machine.profile.version


def _finding(f: Finding) -> dict[str, Any]:
    return {"severity": f.severity, "code": f.code, "device": f.device, "queue": f.queue,
            "title": f.title}


def verdict_of(record: dict[str, Any]) -> str:
    """The group a record goes in: ``incomplete`` when its dump lacks bytes it should hold,
    else the worst finding's code, ``ok``, or why there is no answer."""
    if (record.get("absent") or {}).get("incomplete"):
        return "incomplete"     # what was read may be fine; what was not is unknown
    if record["worst"] is not None:
        return record["worst"]["code"]
    if record["inputs"]["dump"] is None:
        return "unreadable" if record["errors"] else "no-dump"
    if record["qemu"]["state"] == "none":
        return "no-qemu-state"
    return "ok"


def failed_record(job: VmJob, err: BaseException) -> dict[str, Any]:
    """The record of a job whose worker died (killed, out of memory): only the error."""
    record = triage_vm(VmJob(vm=job.vm))
    record["errors"] = [_error(job.dumps[0][0] if job.dumps else None, err)]
    record["verdict"] = verdict_of(record)
    return record


def triage_vm(job: VmJob) -> dict[str, Any]:
    """The record of one VM (see ``docs/triage.md`` for the members).

    Never raises for bad input; the caller may run it in any process.
    """
    errors: list[dict[str, Any]] = [{"input": p, "class": "InputError", "message": f"{p}: {r}"}
                                    for p, r in (*job.bad, *job.unknown)]
    warnings: list[str] = []
    knowledge, logs = _read_logs(job, errors, warnings) if job.logs else (None, [])
    opened, memory, unused = _open(job, errors) if job.dumps else (None, None, [])
    unused += [{"path": p, "reason": r} for p, r in job.skipped]
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "vm": job.vm,
        "inputs": {"dump": None, "format": None, "memory": memory, "logs": logs,
                   "unused": sorted(unused, key=lambda u: u["path"])},
        "absent": None,
        "qemu": {"state": None, "version": None, "profile": None},
        "verdict": None, "worst": None,
        "counts": {"devices": 0, "queues": 0, "problem_queues": 0, "pending": 0, "inflight": 0,
                   "errors": 0, "warnings": 0, "info": 0, "unknown": 0},
        "devices": [], "findings": [], "errors": errors, "notes": warnings,
    }
    if opened is None and job.dumps == () and logs:
        record["notes"].append("no dump, QEMU core or bundle for this VM: only its QMP log(s)")
    if opened is not None:
        record["inputs"]["dump"], record["inputs"]["format"] = opened.path, opened.format
        if opened.absent is not None:
            record["absent"] = {"incomplete": opened.absent.incomplete,
                                "absent_bytes": opened.absent.absent_bytes,
                                "kinds": [p.kind for p in opened.absent.parts],
                                "lines": opened.absent.lines()}
        if knowledge is None and opened.qmp_log is not None:
            from vdecode.sources.qmp_log import LogKnowledge
            knowledge = LogKnowledge.from_log(opened.qmp_log)
        try:
            with opened:
                view, profile = _view(opened, knowledge, logs[-1] if logs else None)
            _fill(record, view, profile)
        except (VdecodeError, OSError) as err:      # (CarveSplit is no Exception: it goes up)
            errors.append(_error(opened.path, err))
        except Exception as err:                    # noqa: BLE001 - see the module docstring
            errors.append(_error(opened.path, err))
    record["verdict"] = verdict_of(record)
    if job.unknown and not (job.dumps or job.logs or job.bad):
        record["verdict"] = "unrecognised"       # not an input at all, rather than one unreadable
    return record


def _fill(record: dict[str, Any], view: View, profile: str) -> None:
    """The record's members from the view's records (plain JSON values: records go to JSON,
    CSV and other processes)."""
    record["qemu"] = {"state": view.input.qemu_state, "version": view.input.qemu_version,
                      "profile": profile}
    counts = record["counts"]
    by_queue: dict[tuple[str, int | None], list[str]] = {}
    for f in view.findings:
        by_queue.setdefault((f.device, f.queue), []).append(f.code)
        counts[{"error": "errors", "warning": "warnings", "unknown": "unknown"}.get(
            f.severity, "info")] += 1
    for dev in view.devices:
        queues = []
        for q in dev.queues:
            codes = by_queue.get((dev.path, q.index), [])
            queues.append({"index": q.index, "size": q.size, "health": q.health,
                           "pending": q.pending, "inflight": q.inflight,
                           "avail_idx": q.indices.avail_idx, "used_idx": q.shown_used_idx,
                           "last_avail_idx": q.indices.last_avail_idx,
                           "ring_error": q.ring_error, "findings": codes})
            counts["pending"] += q.pending or 0
            counts["inflight"] += q.inflight or 0
            counts["problem_queues"] += q.health not in ("ok",)
        counts["devices"] += 1
        counts["queues"] += len(queues) + dev.idle_queues_hidden
        record["devices"].append({"name": dev.name, "path": dev.path,
                                  "status": list(dev.status_flags), "broken": dev.broken,
                                  "findings": by_queue.get((dev.path, None), []),
                                  "queues": queues, "idle_queues": dev.idle_queues_hidden})
    record["findings"] = [_finding(f) for f in view.findings]
    worst = [f for f in view.findings if f.severity in ("error", "warning")]
    record["worst"] = _finding(worst[0]) if worst else None
    record["notes"] = [*record["notes"], *view.notes]


# --- one dump's carving split across the workers ---------------------------------------------


def triage_step(job: VmJob, prepared: dict | None = None,
                split_from: int | None = None) -> dict[str, Any]:
    """:func:`triage_vm`, except that carving a dump of at least ``split_from`` bytes of RAM is
    handed back as ``{"split": (path, little_endian, chunks)}`` for the caller to spread over its
    workers with :func:`triage_part`; ``prepared`` holds the scans of splits done so far
    (:func:`vdecode.virtio.carve.split_carving`)."""
    from vdecode.virtio.carve import CarveSplit, split_carving
    with split_carving(prepared, split_from):
        try:
            return triage_vm(job)
        except CarveSplit as split:
            return {"split": (split.path, split.little_endian, split.chunks)}


def triage_part(path: str, cache_dir: str | None, little_endian: bool, first: int,
                last: int) -> list:
    """Chunks ``first .. last-1`` of carving the dump at ``path`` (a :func:`triage_step` split)."""
    from vdecode.space.open import open_dump
    from vdecode.virtio.carve import scan_part
    with open_dump(path, cache_dir=cache_dir) as dump:
        return scan_part(dump.space, first, last, little_endian)


def preload() -> None:
    """Import what :func:`triage_vm` imports when it runs, so that pool workers forked after
    this start with it (instead of each importing it again)."""
    import vdecode.reconstruct.postmortem.findings   # noqa: F401
    import vdecode.reconstruct.postmortem.index_motion   # noqa: F401
    import vdecode.reconstruct.postmortem.view_model   # noqa: F401
    import vdecode.reconstruct.rings.match   # noqa: F401
    import vdecode.reconstruct.rings.unlogged   # noqa: F401
    import vdecode.reconstruct.state.session   # noqa: F401
    import vdecode.space.open   # noqa: F401
    import vdecode.sources.qmp_log   # noqa: F401
    import vdecode.virtio.carve   # noqa: F401
