"""
The bug-report bundle's notes: what a ``vdecode bundle`` file says besides its guest pages
------------------------------------------------------------------------------------------
A bundle (``docs/bundle.md``) is an ELF core whose PT_NOTE holds notes owned by ``VDECODE``:

==============  ====================  ============================================================
type            name                  descriptor
==============  ====================  ============================================================
``0x56440001``  ``VDB_META``          JSON object: bundle version, provenance, options, kept sizes
``0x56440002``  ``VDB_QMP_LOG``       the QMP log as the captures' JSON lines (``vdecode log --json``)
``0x56440003``  ``VDB_QEMU_STATE``    JSON of :class:`~vdecode.sources.qemu_state.QemuVirtioState`
``0x56440004``  ``VDB_FINDINGS``      JSON list of findings (optional)
``0x56440005``  ``VDB_SUMMARY``       UTF-8 text for people (optional)
==============  ====================  ============================================================

This module decodes those descriptors into facts, checking every value's type: a bundle is
untrusted input like any dump. The pages are read by :mod:`vdecode.space.bundle_space`.
"""

from __future__ import annotations

import functools
import json
import typing
from dataclasses import fields
from typing import Any

from vdecode.errors import CorruptInput, UnsupportedInput
from vdecode.frozen import record
from vdecode.sources.elf_dump import ElfFacts, ElfNote, read_note_desc
from vdecode.sources.files import FileView
from vdecode.sources.qemu_state import (QemuVirtioState, VhostDev, VhostVirtqueue,
                                        VirtIODeviceState, VirtQueueState)

if typing.TYPE_CHECKING:
    from vdecode.sources.qmp_log.model import QmpLog

__all__ = ("NOTE_OWNER", "VDB_META", "VDB_QMP_LOG", "VDB_QEMU_STATE", "VDB_FINDINGS",
           "VDB_SUMMARY", "BUNDLE_VERSION", "MAX_NOTE_BYTES", "BundleFacts", "is_bundle",
           "read_bundle_notes", "decode_qemu_state")

NOTE_OWNER = "VDECODE"
# "VD" in the high half keeps clear of the core note types readers act on (NT_PRSTATUS is 1).
VDB_META, VDB_QMP_LOG, VDB_QEMU_STATE, VDB_FINDINGS, VDB_SUMMARY = range(0x56440001, 0x56440006)
NOTE_NAMES = {VDB_META: "VDB_META", VDB_QMP_LOG: "VDB_QMP_LOG", VDB_QEMU_STATE: "VDB_QEMU_STATE",
              VDB_FINDINGS: "VDB_FINDINGS", VDB_SUMMARY: "VDB_SUMMARY"}
BUNDLE_VERSION = 1
MAX_NOTE_BYTES = 64 << 20          # a bundle is small; a bigger note is not one vdecode wrote
MAX_RANGES = 1 << 16
MAX_DEVICES = 4096
MAX_QUEUES = 1024                  # VIRTIO_QUEUE_MAX


@record
class BundleFacts:
    """What a bundle's notes say.

    :param meta: the ``VDB_META`` object (provenance, options, kept sizes).
    :param ram_ranges: the origin dump's guest RAM as ``(start, size)``: a page outside the kept
        ones but inside these was left out of the bundle, one outside them was never in the dump.
    :param qemu: the QEMU-side state, when the bundle was made from a QEMU process core.
    :param qmp_log: the embedded QMP log, when one was given.
    :param findings: the ``VDB_FINDINGS`` list, if any.
    :param summary: the ``VDB_SUMMARY`` text, if any.
    """

    meta: dict[str, Any]
    ram_ranges: tuple[tuple[int, int], ...]
    qemu: QemuVirtioState | None
    qmp_log: QmpLog | None
    findings: list | None
    summary: str | None


def is_bundle(elf: ElfFacts) -> bool:
    """Whether ``elf`` has a ``VDECODE`` ``VDB_META`` note (what makes a core a bundle)."""
    return bool(elf.find_notes(NOTE_OWNER, VDB_META))


def _one(elf: ElfFacts, type_: int) -> ElfNote | None:
    found = elf.find_notes(NOTE_OWNER, type_)
    if len(found) > 1:
        raise CorruptInput(elf.source, f"bundle: {len(found)} {NOTE_NAMES[type_]} notes, "
                                       f"expected one", offset=found[1].desc_offset)
    return found[0] if found else None


def _text(view: FileView, note: ElfNote) -> str:
    if note.desc_size > MAX_NOTE_BYTES:
        raise CorruptInput(view.name, f"bundle: {NOTE_NAMES[note.type]} note of {note.desc_size} "
                                      f"bytes is over the {MAX_NOTE_BYTES} byte limit",
                           offset=note.desc_offset)
    raw = bytes(read_note_desc(view, note))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorruptInput(view.name, f"bundle: {NOTE_NAMES[note.type]} note is not UTF-8: "
                                      f"{err.reason} at byte {err.start}",
                           offset=note.desc_offset) from err


def _json(view: FileView, note: ElfNote) -> Any:
    text = _text(view, note)
    try:
        return json.loads(text)
    except ValueError as err:
        raise CorruptInput(view.name, f"bundle: {NOTE_NAMES[note.type]} note is not JSON: {err}",
                           offset=note.desc_offset) from err
    except RecursionError as err:
        raise CorruptInput(view.name, f"bundle: {NOTE_NAMES[note.type]} note nests too deeply",
                           offset=note.desc_offset) from err


def read_bundle_notes(view: FileView, elf: ElfFacts) -> BundleFacts:
    """Decode the ``VDECODE`` notes of a bundle.

    :raises CorruptInput: a note is missing, repeated, not UTF-8/JSON, or has a wrong shape.
    :raises UnsupportedInput: the bundle is of a newer version than this vdecode reads.
    """
    name = view.name
    meta_note = _one(elf, VDB_META)
    if meta_note is None:
        raise CorruptInput(name, "bundle: no VDB_META note")
    meta = _json(view, meta_note)
    bad = CorruptInput(name, "bundle: VDB_META is not an object with format 'vdecode-bundle'",
                       offset=meta_note.desc_offset)
    if not isinstance(meta, dict) or meta.get("format") != "vdecode-bundle":
        raise bad
    version = meta.get("bundle_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CorruptInput(name, f"bundle: VDB_META bundle_version {version!r} is not a positive "
                                 f"integer", offset=meta_note.desc_offset)
    if version > BUNDLE_VERSION:
        raise UnsupportedInput(name, f"bundle version {version} is newer than this vdecode reads "
                                     f"({BUNDLE_VERSION}); upgrade vdecode")
    ram = _ram_ranges(name, meta, meta_note.desc_offset)

    qemu = None
    note = _one(elf, VDB_QEMU_STATE)
    if note is not None:
        qemu = decode_qemu_state(_json(view, note), name, offset=note.desc_offset)
    qmp_log = None
    note = _one(elf, VDB_QMP_LOG)
    if note is not None:
        qmp_log = _read_log(name, _text(view, note))
    findings = None
    note = _one(elf, VDB_FINDINGS)
    if note is not None:
        findings = _json(view, note)
        if not isinstance(findings, list):
            raise CorruptInput(name, "bundle: VDB_FINDINGS is not a JSON list",
                               offset=note.desc_offset)
    note = _one(elf, VDB_SUMMARY)
    summary = _text(view, note) if note is not None else None
    return BundleFacts(meta, ram, qemu, qmp_log, findings, summary)


def _ram_ranges(name: str, meta: dict, at: int) -> tuple[tuple[int, int], ...]:
    origin = meta.get("origin")
    ranges = origin.get("ram_ranges", []) if isinstance(origin, dict) else None
    if not isinstance(ranges, list) or len(ranges) > MAX_RANGES or not all(
            isinstance(r, list) and len(r) == 2 and all(_is_u64(x) for x in r) for r in ranges):
        raise CorruptInput(name, "bundle: VDB_META origin.ram_ranges is not a list of "
                                 "[start, size] pairs of unsigned 64-bit integers", offset=at)
    return tuple((int(a), int(b)) for a, b in ranges)


def _is_u64(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 64


def _read_log(name: str, text: str) -> QmpLog:
    """The embedded transcript, read by the captures' JSON-lines reader."""
    from vdecode.sources.qmp_log import jsonl           # the log readers load only for bundles
    from vdecode.sources.qmp_log.builder import LogBuilder

    b = LogBuilder(f"{name} (VDB_QMP_LOG)", jsonl.NAME)
    jsonl.read(enumerate(text.splitlines(), 1), b)
    return b.finish()


# --- QemuVirtioState from JSON --------------------------------------------------------------


def decode_qemu_state(obj: Any, source: str, note: str = "VDB_QEMU_STATE", *,
                      offset: int | None = None) -> QemuVirtioState:
    """A :class:`QemuVirtioState` from its bundle JSON (``docs/bundle.md``), every value checked.

    :param source: the bundle's name, for messages; ``note`` names the note, ``offset`` is
        where its descriptor starts.
    :raises CorruptInput: a member has the wrong type or a count is beyond any real machine.

    >>> s = decode_qemu_state({"devices": [], "qemu_version": [7, 2, 0], "source": "core"}, "b.vdb")
    >>> s.devices, s.qemu_version, s.source, s.labels
    ((), (7, 2, 0), 'core', ())
    """
    try:
        d = _obj(obj, "state")
        devices = _list(d.get("devices", []), "devices", MAX_DEVICES)
        version = d.get("qemu_version")
        if version is not None:
            version = _list(version, "qemu_version", 3)
            if len(version) != 3 or not all(_is_u64(v) for v in version):
                raise ValueError("qemu_version is not three integers")
            version = tuple(version)
        state = QemuVirtioState(devices=[_device(x, f"devices[{i}]") for i, x in enumerate(devices)],
                                qemu_version=version,
                                package=_opt(d.get("package"), str, "package"),
                                source=_opt(d.get("source", ""), str, "source") or "",
                                labels=_labels(d.get("labels", [])),
                                labels_from=_opt(d.get("labels_from"), str, "labels_from"))
    except ValueError as err:
        raise CorruptInput(source, f"bundle: {note}: {err}", offset=offset) from None
    return state


def _labels(x: Any) -> tuple[tuple, ...]:
    """``labels``: the build's own strings, ``[section, key, desc]`` each, or ``[section, key,
    desc, after]`` for a row the profile lacks (``after``: the key before it, ``-1`` first)."""
    rows = _list(x, "labels", 4096)
    for r in rows:
        if not (isinstance(r, list) and len(r) in (3, 4) and isinstance(r[0], str)
                and _is_u64(r[1]) and isinstance(r[2], str)
                and (len(r) == 3 or r[3] == -1 or _is_u64(r[3]))):
            raise ValueError("labels: each is [section, key, text] or [section, key, text, "
                             "after]")
    return tuple(tuple(r) for r in rows)


def _obj(x: Any, what: str) -> dict:
    if not isinstance(x, dict):
        raise ValueError(f"{what} is not an object")
    return x


def _list(x: Any, what: str, limit: int) -> list:
    if not isinstance(x, list):
        raise ValueError(f"{what} is not a list")
    if len(x) > limit:
        raise ValueError(f"{what} has {len(x)} entries, more than {limit}")
    return x


def _opt(x: Any, typ: type, what: str) -> Any:
    if x is None:
        return None
    # feature words are 128 bits from QEMU 10.2 (VIRTIO_DECLARE_FEATURES)
    bits = 128 if what.endswith("features") else 64
    if typ is int and (not isinstance(x, int) or isinstance(x, bool) or not -(1 << 63) <= x < 1 << bits):
        raise ValueError(f"{what} is not a {bits}-bit integer")
    if typ is float and (not isinstance(x, (int, float)) or isinstance(x, bool)):
        raise ValueError(f"{what} is not a number")
    if typ in (bool, str) and not isinstance(x, typ):
        raise ValueError(f"{what} is not a {typ.__name__}")
    return x


_SCALARS = {"int": int, "bool": bool, "str": str, "float": float}
# Values that size reads or index rings: bounded as a QEMU process core's reader bounds them.
_BOUNDS = {"vring_num": 32768, "vring_num_default": 32768, "vring_align": 1 << 32,
           "last_avail_idx": 0xFFFF, "shadow_avail_idx": 0xFFFF, "used_idx": 0xFFFF,
           "signalled_used": 0xFFFF, "inuse": 32768, "num_vqs": MAX_QUEUES, "nvqs": MAX_QUEUES,
           "vq_index": MAX_QUEUES, "queue_sel": 0xFFFF, "max_queues": MAX_QUEUES}


@functools.cache
def _scalar_fields(cls: type) -> tuple[tuple[str, type, bool], ...]:
    """``(name, scalar type, may be None)`` of each scalar field of dataclass ``cls`` (once a
    class).

    Read from the annotations' text (``"int"``, ``"int | None"``: the modules use postponed
    annotations): resolving them with ``typing.get_type_hints`` took a millisecond of every
    bundle answer's start-up."""
    out = []
    for f in fields(cls):
        parts = [p.strip() for p in str(f.type).split("|")]
        optional = "None" in parts
        named = [p for p in parts if p != "None"]
        if len(named) == 1 and named[0] in _SCALARS:
            out.append((f.name, _SCALARS[named[0]], optional))
    return tuple(out)


def _scalars(cls: type, d: dict, what: str, skip: set[str]) -> dict[str, Any]:
    """The scalar fields of dataclass ``cls`` present in ``d``, type-checked."""
    out: dict[str, Any] = {}
    for name, typ, optional in _scalar_fields(cls):
        if name in skip or name not in d:
            continue
        out[name] = _opt(d[name], typ, f"{what}.{name}")
        bound = _BOUNDS.get(name)
        if bound is not None and out[name] is not None and not 0 <= out[name] <= bound:
            raise ValueError(f"{what}.{name} {out[name]} is outside 0..{bound}")
        if out[name] is None and not optional:
            raise ValueError(f"{what}.{name} may not be null")
    return out


def _provenance(x: Any, what: str) -> dict[str, str]:
    p = _obj(x if x is not None else {}, f"{what}.provenance")
    if len(p) > 256 or not all(isinstance(k, str) and isinstance(v, str) for k, v in p.items()):
        raise ValueError(f"{what}.provenance is not a small object of strings")
    return dict(p)


def _device(x: Any, what: str) -> VirtIODeviceState:
    d = _obj(x, what)
    path = d.get("canonical_path")
    if not isinstance(path, str):
        raise ValueError(f"{what}.canonical_path is not a string")
    kw = _scalars(VirtIODeviceState, d, what, {"canonical_path"})
    queues = {}
    for i, q in enumerate(_list(d.get("queues", []), f"{what}.queues", MAX_QUEUES)):
        vq = _queue(q, f"{what}.queues[{i}]")
        queues[vq.queue_index] = vq
    absent = set(_list(d.get("absent_queues", []), f"{what}.absent_queues", MAX_QUEUES))
    # every queue a device lacks of VIRTIO_QUEUE_MAX: a thousand a device, checked in one pass
    # (type() is int also refuses bools)
    if not all(type(a) is int for a in absent) or (absent and (min(absent) < 0
                                                              or max(absent) >= MAX_QUEUES)):
        raise ValueError(f"{what}.absent_queues is not a list of queue numbers")
    vhost = d.get("vhost_dev")
    return VirtIODeviceState(canonical_path=path, **kw, queues=queues, absent_queues=absent,
                             vhost_dev=None if vhost is None else _vhost(vhost, f"{what}.vhost_dev"),
                             provenance=_provenance(d.get("provenance"), what))


def _queue(x: Any, what: str) -> VirtQueueState:
    d = _obj(x, what)
    index = d.get("queue_index")
    if not _is_u64(index) or index >= MAX_QUEUES:
        raise ValueError(f"{what}.queue_index is not a queue number below {MAX_QUEUES}")
    kw = _scalars(VirtQueueState, d, what, {"queue_index"})
    return VirtQueueState(queue_index=index, **kw, provenance=_provenance(d.get("provenance"), what))


def _vhost(x: Any, what: str) -> VhostDev:
    d = _obj(x, what)
    kw = _scalars(VhostDev, d, what, set())
    vqs = {}
    for i, v in enumerate(_list(d.get("vqs", []), f"{what}.vqs", MAX_QUEUES)):
        v = _obj(v, f"{what}.vqs[{i}]")
        index = v.get("index")
        if not _is_u64(index) or index >= MAX_QUEUES:
            raise ValueError(f"{what}.vqs[{i}].index is not a queue number below {MAX_QUEUES}")
        vqs[index] = VhostVirtqueue(**_scalars(VhostVirtqueue, v, f"{what}.vqs[{i}]", set()))
    return VhostDev(**kw, vqs=vqs)
