"""Which files belong to which VM: the paths of ``vdecode triage`` grouped into jobs.

Folders are searched recursively, in sorted order. Each file is classified from its first bytes
(the magics of :data:`vdecode.sources.sniff.MAGICS`; the notes of an uncompressed ELF say whether
it is a bundle, a QEMU process core or a guest dump, :func:`~vdecode.sources.sniff.classify_elf`)
and, for text, from its first lines (:func:`vdecode.sources.qmp_log.sniff.sniff_format`). Names
only pair files, the way people name them:

* ``NAME.elf``, ``NAME.kdump``, ``NAME.core`` (compressed or not) and ``NAME.log``,
  ``NAME.qmp.jsonl`` anywhere under the paths, libvirt's ``/var/log/libvirt/qemu/NAME.log``
  included, are the VM ``NAME``;
* generic names (``dump.elf.zst``, ``qemu.core.zst``, ``early.jsonl``, ``instant.jsonl``: the
  capture layout, ``docs/new-captures.md``) are the VM of their folder;
* a bundle (``*.vdb``, or an ELF with a ``VDECODE`` note) is a VM alone: it carries its log;
* a file that is none of these (random bytes, text that is no QMP log, an empty file) is a job
  alone too, with the reason (:attr:`VmJob.unknown`): every file given or found is accounted
  for, only the capture layout's own files (:data:`NOT_INPUTS`) are passed over in silence.

Nothing here opens a dump for real: a job is only paths, so it can travel to a worker process or
a Dask worker.
"""

from __future__ import annotations

import os
from dataclasses import field, replace

from vdecode.errors import InputError, VdecodeError
from vdecode.frozen import record
from vdecode.sources.elf_dump import read_elf
from vdecode.sources.files import FileView
from vdecode.sources.qmp_log.lines import read_head
from vdecode.sources.qmp_log.sniff import sniff_format
from vdecode.sources.sniff import MAGICS, classify_elf

__all__ = ("VmJob", "discover", "classify_file", "vm_key", "check_has_dumps")

COMPRESSED = (".zst", ".gz", ".xz")
DUMP_SUFFIXES = (".elf", ".core", ".kdump", ".vmcore", ".dump", ".vdb", ".img", ".mem")
LOG_SUFFIXES = (".log", ".jsonl", ".qmp", ".json")
TYPE_SUFFIXES = (*DUMP_SUFFIXES, ".log", ".jsonl", ".qmp", ".json", ".txt")
#: stems that name a kind of file, not a VM: such a file belongs to its folder's VM
GENERIC_STEMS = frozenset({"dump", "qemu", "core", "vmcore", "memory", "guest", "early", "instant",
                           "qmp", "monitor", "log", "transcript", "vm", "console", "serial"})
#: files of the capture layout that are not inputs (manifest, truth, serial console, argv)
NOT_INPUTS = frozenset({"case.json", "truth.json", "qemu-argv.json"})


@record
class VmJob:
    """The inputs of one VM, as paths (what a worker needs to build its record).

    :param vm: the VM's name (a file stem, or the folder of a capture).
    :param dumps: ``(path, kind)`` in the order to try: QEMU cores first (they hold QEMU's own
        state), then guest dumps; ``kind`` is ``"qemu-core"``, ``"bundle"``, ``"dump"``.
    :param logs: QMP logs, by path.
    :param skipped: ``(path, reason)`` of files looked at and left out (a ``.log`` with no QMP).
    :param bad: ``(path, reason)`` of files that look like inputs and are none.
    :param unknown: ``(path, reason)`` of a file that is not recognised as any input (the job
        holds nothing else: its record says so, verdict ``unrecognised``).
    """

    vm: str
    dumps: tuple[tuple[str, str], ...] = ()
    logs: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    bad: tuple[tuple[str, str], ...] = ()
    unknown: tuple[tuple[str, str], ...] = ()
    cache_dir: str | None = field(default=None, compare=False)


def _strip(name: str, suffixes: tuple[str, ...]) -> str:
    low = name.lower()
    for s in suffixes:
        if low.endswith(s) and len(name) > len(s):
            return name[:-len(s)]
    return name


def stem_of(name: str) -> str:
    """The VM part of a file name: compression and type suffixes stripped.

    >>> stem_of("web-01.example.com.qmp.jsonl"), stem_of("dump.kdump-zlib.zst"), stem_of("elf+early.vdb.zst")
    ('web-01.example.com', 'dump', 'elf+early')
    """
    name = _strip(name, COMPRESSED)
    while True:
        low = name.lower()
        cut = next((s for s in TYPE_SUFFIXES if low.endswith(s) and len(name) > len(s)), None)
        if cut is None:
            base, dot, ext = name.rpartition(".")     # dump.kdump-zlib: a kind with a variant
            if dot and base and ext.split("-")[0] in ("kdump", "elf", "core", "vmcore"):
                name = base
                continue
            return name
        name = name[:-len(cut)]


def vm_key(path: str) -> tuple[str, str]:
    """``(key, vm name)``: a named file pairs by name anywhere, a generic one within its folder."""
    folder, name = os.path.split(path)
    stem = stem_of(name)
    if stem.lower() in GENERIC_STEMS:
        parent = os.path.basename(os.path.normpath(folder)) if folder else "."
        return f"dir:{os.path.normpath(folder or '.')}", parent
    return f"name:{stem}", stem


def _magic(path: str) -> str | None:
    with open(path, "rb") as f:
        head = f.read(16)
    return next((kind for magic, kind in MAGICS if head.startswith(magic)), None)


def classify_file(path: str) -> tuple[str, str]:
    """``(kind, reason)``: kind is ``"bundle"``, ``"qemu-core"``, ``"dump"``, ``"log"``,
    ``"skipped"``, ``"bad"``, ``"unknown"`` (not recognised as any input: the reason says what it
    is) or ``"ignored"`` (a file of the capture layout that is not an input)."""
    name = os.path.basename(path)
    low = name.lower()
    inner = _strip(low, COMPRESSED)
    try:
        magic = _magic(path)
    except OSError as err:
        return "bad", f"cannot read: {err.strerror or err}"
    if magic in ("zstd", "gzip", "xz"):
        if inner.endswith(LOG_SUFFIXES):
            if magic == "xz":
                return "bad", "an xz-compressed log: decompress it first (logs are read as " \
                              "text, or gzip/zstd)"
            return _log_kind(path, low)      # the log reader decompresses gzip and zstd itself
        if inner.endswith(".vdb"):
            return "bundle", ""
        return ("qemu-core" if _names_core(inner) else "dump"), ""
    if magic == "elf":
        try:
            view = FileView(path)
            try:
                fmt = classify_elf(read_elf(view))
            finally:
                view.close()
        except VdecodeError:
            return "dump", ""                 # the worker opens it and says what is wrong
        return (fmt if fmt in ("bundle", "qemu-core") else "dump"), ""
    if magic is not None:
        return "dump", ""
    if name in NOT_INPUTS:
        return "ignored", ""
    if inner.endswith(LOG_SUFFIXES):
        return _log_kind(path, low)
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as err:
        return "bad", f"cannot read: {err.strerror or err}"
    if inner.endswith(DUMP_SUFFIXES):
        return "bad", ("empty file" if not head else
                       f"not a dump this tool reads (starts with {head[:16]!r})")
    return _unknown_kind(path, head)


def _unknown_kind(path: str, head: bytes) -> tuple[str, str]:
    """A file whose name says nothing: a QMP log if its text is one (whatever its name), else
    ``"unknown"`` with what it is instead."""
    if not head:
        return "unknown", "empty file"
    if _looks_like_text(head):
        try:
            sniff_format(read_head(path), path)
        except VdecodeError:
            return "unknown", "text, not a QMP log in any format this tool reads"
        except (OSError, UnicodeError) as err:
            return "unknown", f"cannot read as text: {err}"
        return "log", ""
    return "unknown", (f"binary, not a dump, QEMU core, bundle or QMP log (no magic this tool "
                       f"reads; starts with {head[:8].hex(' ')})")


def _looks_like_text(head: bytes) -> bool:
    """UTF-8 without control bytes other than whitespace (a cut multi-byte character at the end
    of ``head`` allowed)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:
            return False
        text = head[:err.start].decode("utf-8")
    return not any(ord(c) < 32 and c not in "\t\n\r\f" for c in text)


def _log_kind(path: str, low: str) -> tuple[str, str]:
    """A file named like a log: a log when its first lines are QMP traffic in a known format."""
    try:
        sniff_format(read_head(path), path)
    except VdecodeError as err:
        if low.endswith(".json"):                   # JSON that is no log: a file of its own
            return "unknown", f"JSON, not a QMP log: {err.reason}"
        return "skipped", f"not a QMP log: {err.reason}"
    except (OSError, UnicodeError) as err:
        return "bad", f"cannot read: {err}"
    return "log", ""


def _names_core(name: str) -> bool:
    return "core" in name.replace("-", ".").replace("_", ".").split(".")


def _walk(paths: list[str]) -> list[str]:
    files: set[str] = set()
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs.sort()
                files.update(os.path.join(root, n) for n in names)
        else:
            files.add(p)
    return sorted(files)


def discover(paths: list[str], cache_dir: str | None = None) -> list[VmJob]:
    """The jobs for ``paths`` (files or folders), sorted by VM name then inputs.

    A path that does not exist is a job with an error, like any unreadable file.
    """
    groups: dict[str, dict] = {}
    alone: list[VmJob] = []
    unknown: list[tuple[str, str]] = []
    given = {p for p in paths if not os.path.isdir(p)}
    for path in _walk(paths):
        if not os.path.exists(path):
            kind, reason = "bad", "no such file or directory"
        else:
            kind, reason = classify_file(path)
        if kind == "ignored" and path in given:     # named on the command line: say why not
            kind, reason = "unknown", "a file of the capture layout (docs/new-captures.md), " \
                                      "not an input"
        if kind == "ignored":
            continue
        if kind == "unknown":
            unknown.append((path, reason))
            continue
        key, vm = vm_key(path)
        if kind == "bundle":
            alone.append(VmJob(vm=stem_of(os.path.basename(path)), dumps=((path, "bundle"),),
                               cache_dir=cache_dir))
            continue
        g = groups.setdefault(key, {"vm": vm, "dumps": [], "logs": [], "skipped": [], "bad": []})
        if kind in ("qemu-core", "dump"):
            g["dumps"].append((path, kind))
        elif kind == "log":
            g["logs"].append(path)
        else:
            g[kind].append((path, reason))
    jobs = [VmJob(vm=g["vm"], dumps=tuple(sorted(g["dumps"], key=_preference)),
                  logs=tuple(g["logs"]), skipped=tuple(g["skipped"]), bad=tuple(g["bad"]),
                  cache_dir=cache_dir)
            for g in groups.values() if g["dumps"] or g["logs"] or g["bad"]]
    # a skipped file (a serial console's .log) whose VM has nothing else is not recognised either
    unknown += [u for g in groups.values() if not (g["dumps"] or g["logs"] or g["bad"])
                for u in g["skipped"]]
    alone += [VmJob(vm=os.path.basename(p), unknown=((p, r),), cache_dir=cache_dir)
              for p, r in unknown]
    names = [j.vm for j in jobs] + [j.vm for j in alone]
    alone = [j if names.count(j.vm) == 1 else
             replace(j, vm=_bundle_name((j.dumps or j.unknown)[0][0], stem=not j.unknown))
             for j in alone]
    return sorted(jobs + alone, key=lambda j: (j.vm, [d for d, _ in j.dumps], j.logs,
                                               [b for b, _ in j.bad], [u for u, _ in j.unknown]))


def _preference(d: tuple[str, str]) -> tuple[int, str]:
    """QEMU cores first (exact QEMU state), then ELF dumps (no page decompression), then the rest."""
    path, kind = d
    low = _strip(os.path.basename(path).lower(), COMPRESSED)
    rank = 0 if kind == "qemu-core" else 1 if low.endswith(".elf") else 2
    return rank, path


def _bundle_name(path: str, stem: bool = True) -> str:
    """A bundle whose stem another VM has too: folder and stem (``big/elf+early``; capture
    folders hold bundles of the same names); an unrecognised file: folder and name."""
    folder, name = os.path.split(path)
    parent = os.path.basename(os.path.normpath(folder)) if folder else ""
    name = stem_of(name) if stem else name
    return f"{parent}/{name}" if parent else name


def check_has_dumps(paths: list[str], jobs: list[VmJob]) -> None:
    """Raise one :class:`InputError` line when ``jobs`` hold no dump, QEMU core or bundle: an
    empty folder, or only logs and files that are not inputs. Why not records: a run with
    nothing to triage is a mistaken path far more often than a fleet without crashes, and an
    empty table (or a table of log-only VMs) exiting 0 looks like a healthy fleet."""
    if any(j.dumps for j in jobs):
        return
    source = paths[0] if len(paths) == 1 else f"{paths[0]} (and {len(paths) - 1} more paths)"
    logs = [p for j in jobs for p in j.logs]
    problems = [u for j in jobs for u in (*j.bad, *j.unknown, *j.skipped)]
    if not logs and not problems:
        what = "an empty folder" if all(os.path.isdir(p) for p in paths) else "no files"
        raise InputError(source, f"nothing to triage: {what} (no dump, QEMU core or bundle)")
    parts = []
    if logs:
        names = ", ".join(os.path.basename(p) for p in logs[:3])
        parts.append(f"{len(logs)} QMP log(s) ({names}{', ...' if len(logs) > 3 else ''})")
    if problems:
        shown = "; ".join(f"{os.path.basename(p)}: {r}" for p, r in problems[:3])
        more = f"; +{len(problems) - 3} more" if len(problems) > 3 else ""
        parts.append(f"{len(problems)} file(s) that are no input ({shown}{more})")
    raise InputError(source, "no dump, QEMU core or bundle to triage, only " + " and ".join(parts))
