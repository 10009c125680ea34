"""``vdecode info``: what a dump holds, as text for people or JSON for scripts.

Renders :attr:`vdecode.space.dump.Dump.info`, the facts each reader gathered when it opened the
file. Keys a reader does not provide are left out of the text.
"""

from __future__ import annotations

import json
import re
from typing import Any

from vdecode.render.wrapping import phrases, wrap_units

__all__ = ("render_info_json", "render_info_text", "human_size")


def human_size(n: int) -> str:
    """Binary-prefixed size.

    >>> human_size(167772160), human_size(262144), human_size(1000)
    ('160 MiB', '256 KiB', '1000 B')
    """
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


def render_info_json(info: dict[str, Any]) -> str:
    """The info dict as indented JSON (addresses as integers)."""
    return json.dumps(info, indent=2) + "\n"


_REG_ORDER = ("pid", "rip", "rsp", "cr0", "cr3", "cr4")
MAX_RANGES = 16


def _range(r) -> tuple[int, int]:
    """A RAM range as ``(start, size)``, from ``{"start", "size"}`` or a ``[start, size]`` pair."""
    if isinstance(r, dict):
        return int(r["start"]), int(r["size"])
    return int(r[0]), int(r[1])


KEY_WIDTH = 14          # "VMCOREINFO:   ": where values start, and their continuation lines


def _plain(value: Any) -> str:
    """A fact as words, never as a Python repr: booleans as yes/no, an object as ``name value``
    pairs, a list as its items.

    >>> _plain({"full_buffers": False, "header_bytes": 64}), _plain([{"file": "a"}, 2]), _plain(None)
    ('full buffers no, header bytes 64', 'file a; 2', 'none')
    """
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "none"
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {_plain(v)}" for k, v in value.items()
                         if v not in ("", None))
    if isinstance(value, (list, tuple)):
        return "; ".join(_plain(v) for v in value) or "none"
    return str(value)


def render_info_text(info: dict[str, Any], width: int = 80) -> str:
    """The info dict as aligned ``key: value`` lines, RAM ranges and vCPUs as tables, within
    ``width`` columns (a long value wraps at its words under where values start; only a word
    longer than a line, a path or a build-id, may pass the width)."""
    lines: list[str] = []

    def row(key: str, value: object, units: list[str] | None = None) -> None:
        head = f"{key + ':':<13}"
        units = phrases(str(value)) if units is None else units
        lines.extend(wrap_units([head, *units], width, 0, KEY_WIDTH))

    row("file", info.get("file", "?"))
    if "decompressed_to" in info:
        row("decompressed", info["decompressed_to"])
    row("format", info.get("format", "?"))
    if "machine" in info:
        row("machine", " ".join(str(info[k]) for k in ("machine", "elf_class", "endianness") if k in info))
    if "program_headers" in info:
        xnum = " (PN_XNUM)" if info.get("pn_xnum") else ""
        row("headers", f"{info['program_headers']} program headers{xnum}, {info.get('pt_load', '?')} PT_LOAD")
    ranges = [_range(r) for r in info.get("ram_ranges", [])]
    if ranges:
        ram = info.get("ram_bytes", sum(size for _, size in ranges))
        pages = info.get("pages")
        count = (f", {pages} pages of {info.get('page_size', 4096)} bytes" if isinstance(pages, int)
                 else "")
        row("RAM", f"{human_size(ram)} in {len(ranges)} range{'s' * (len(ranges) != 1)}{count}")
    for start, size in ranges[:MAX_RANGES]:
        lines.append(f"  {start:#018x}-{start + size:#018x}  {human_size(size):>10}")
    if len(ranges) > MAX_RANGES:
        lines.append(f"  ... {len(ranges) - MAX_RANGES} more (--json lists them all)")
    if isinstance(info.get("pages"), dict):
        row("pages", " ".join(f"{k}={v}" for k, v in info["pages"].items()))
    vcpus = info.get("vcpus")
    if vcpus is not None:
        row("vCPUs", len(vcpus))
        for cpu in vcpus:
            # each register is a unit: a line never parts a name from its value
            lines.extend(wrap_units([f"  {cpu['index']}: {', '.join(cpu['notes'])}", *(
                f"{k}={cpu[k]:#x}" if k != "pid" else f"pid={cpu[k]}"
                for k in _REG_ORDER if k in cpu)], width, 0, 5, "  "))
    smbios = info.get("smbios")
    if smbios:
        row("SMBIOS", f"{smbios['manufacturer']} / {smbios['product']} / {smbios['version'] or '-'}"
                      f"  (the guest firmware's type 1, entry point {smbios['entry_point']:#x})")
    vmci = info.get("vmcoreinfo")
    if isinstance(vmci, bool):
        vmci = {"present": vmci}
    if vmci is not None:
        if vmci.get("present"):
            extra = f", OSRELEASE={vmci['osrelease']}" if "osrelease" in vmci else ", no OSRELEASE line"
            row("VMCOREINFO", f"present ({vmci.get('size', '?')} bytes){extra}")
        else:
            row("VMCOREINFO", "absent")
    if info.get("format", "").startswith("qemu-core"):
        _core_lines(info, row, lines)
    if info.get("format") == "bundle":
        _bundle_lines(info, row, lines, width)
    other = [n for n in info.get("notes", []) if n["name"] != "QEMU"]
    if other:
        row("other notes", ", ".join(f"{n['name']}/{n['type']:#x} ({n['size']} bytes)" for n in other))
    shown = {"file", "decompressed_to", "format", "machine", "elf_class", "endianness",
             "program_headers", "pn_xnum", "pt_load", "ram_ranges", "ram_bytes", "pages",
             "page_size", "vcpus", "vmcoreinfo", "notes", "file_size", "smbios", *_CORE_KEYS,
             *(_BUNDLE_KEYS if info.get("format") == "bundle" else ())}
    for key, value in info.items():          # facts other readers add (kdump header fields, ...)
        if key in shown:
            continue
        row(key.replace("_", " "), _plain(value))
    return "\n".join(lines) + "\n"


_CORE_KEYS = ("core_writer", "signal", "threads", "crashing_thread", "pid", "command", "binary",
              "build_id", "binary_file", "qemu_version", "package", "qemu_version_from",
              "guest_ram", "guest_dump", "absent_mappings", "ram_blocks", "checks_skipped",
              "warnings", "profile", "profile_reason", "layout_derived")
MAX_ABSENT = 6


def _core_lines(info: dict[str, Any], row, lines: list[str]) -> None:
    """A QEMU process core: who wrote it and why, the binary, what it left out, guest RAM."""
    if "core_writer" in info:
        row("written by", info["core_writer"])
    sig = info.get("signal")
    if sig:
        how = sig.get("code_name", sig.get("code"))
        sender = f", from pid {sig['sender_pid']}" if "sender_pid" in sig else ""
        fault = f", fault address {sig['fault_addr']}" if "fault_addr" in sig else ""
        row("signal", f"{sig.get('name')} ({sig.get('signo')}), si_code {how}{sender}{fault}")
    th = info.get("crashing_thread")
    if th:
        row("thread", f"tid {th['tid']} (the one that dumped; of {info.get('threads', '?')}), "
                      f"rip {th['rip']}, rsp {th['rsp']}")
    if info.get("pid") is not None:
        row("process", f"pid {info['pid']}: {info.get('command', '')}")
    if info.get("binary"):
        row("binary", "", [f"{info['binary']},", f"build-id {info.get('build_id') or 'unknown'}"])
    if info.get("binary_file"):
        row("binary file", info["binary_file"])
    if info.get("qemu_version"):
        from_ = f" (from the {info['qemu_version_from']})" if info.get("qemu_version_from") else ""
        row("QEMU", f"{info['qemu_version']} {info.get('package') or ''}".rstrip() + from_)
    if info.get("profile"):
        why = f" ({info['profile_reason']})" if info.get("profile_reason") else ""
        row("profile", f"{info['profile']}{why}")
    der = info.get("layout_derived")
    if der:
        # which offsets the core itself pinned, and how sure each is (vdecode profile CORE
        # prints every field with its evidence)
        by: dict[str, list[str]] = {}
        for fld, text in der.get("fields", {}).items():
            by.setdefault(text.split(" ", 2)[1].rstrip(":"), []).append(fld)
        row("layout", f"derived from the core, field order of {der.get('template')}")
        for how in ("anchored", "checked", "template"):
            row(f" {how}", f"{len(by.get(how, []))} fields: {', '.join(by.get(how, [])) or '-'}")
    if "guest_ram" in info:
        row("guest RAM", info["guest_ram"])
    absent = info.get("absent_mappings") or []
    if absent:
        total = sum(a["bytes"] for a in absent)
        row("left out", f"{human_size(total)} in {sum(a['mappings'] for a in absent)} mappings "
                        f"(FileSiz 0)")
        for a in absent[:MAX_ABSENT]:
            src = " (read from the binary)" if a.get("from_binary") else ""
            lines.append(f"  {human_size(a['bytes']):>10}  {a['mappings']:>3}  {a['file']}{src}")
        if len(absent) > MAX_ABSENT:
            lines.append(f"  ... {len(absent) - MAX_ABSENT} more files (--json lists them all)")
    for c in info.get("checks_skipped") or []:
        row("skipped", c)
    for w in info.get("warnings") or []:
        row("warning", w)



_BUNDLE_KEYS = ("bundle_version", "created", "vdecode_version", "origin", "logs", "options", "kept",
                "kept_bytes", "kept_runs", "qemu_state", "qmp_log_exchanges", "findings", "summary")
# a queue line of the summary the bundle carries (render/bundle_writer.py _summary)
_SUMMARY_QUEUE = re.compile(r"  queue (\d+): num (\d+)  avail\.idx (\d+)  used\.idx (\d+)  "
                            r"last_avail_idx (\S+)  pending (\S+)  in flight (\S+)$")


def _bundle_lines(info: dict[str, Any], row, lines: list[str], width: int) -> None:
    """A bundle (``docs/bundle.md``): where it came from, what it kept, and the devices and
    queues its summary lists, folded as the view folds them (never-used queues counted, not
    listed)."""
    written = ", ".join(x for x in (
        f"version {info['bundle_version']}" if info.get("bundle_version") is not None else "",
        f"written {info['created']}" if info.get("created") else "",
        f"by vdecode {info['vdecode_version']}" if info.get("vdecode_version") else "") if x)
    if written:
        row("bundle", written)
    origin = info.get("origin")
    if isinstance(origin, dict):
        size = f", {human_size(origin['size'])}" if isinstance(origin.get("size"), int) else ""
        row("origin", f"{origin.get('file', '?')} ({origin.get('format', '?')}{size})")
    elif origin is not None:
        row("origin", _plain(origin))
    logs = info.get("logs")
    logs = [logs] if isinstance(logs, dict) else list(logs or [])
    exchanges = info.get("qmp_log_exchanges")
    texts = [f"{x.get('file', '?')} ({x.get('format', '?')}"
             + (f", {human_size(x['size'])})" if isinstance(x.get("size"), int) else ")")
             if isinstance(x, dict) else _plain(x) for x in logs]
    row("logs", (", ".join(texts) or "none")
        + (f"; {exchanges} exchanges" if isinstance(exchanges, int) else ""))
    opts = info.get("options")
    if isinstance(opts, dict):
        said = [("whole buffers (bounded)" if opts.get("full_buffers") else
                 f"first {opts.get('header_bytes', '?')} bytes of each buffer"),
                "payloads zeroed (--redact)" if opts.get("redact") else "payloads as they were"]
        row("options", ", ".join(said))
    kept = info.get("kept") if isinstance(info.get("kept"), dict) else {}
    nbytes = kept.get("bytes", info.get("kept_bytes"))
    runs = kept.get("runs", info.get("kept_runs"))
    parts = [f"{n} {what}" for what, n in (("ring areas", kept.get("ring_areas")),
                                           ("indirect tables", kept.get("indirect_tables")),
                                           ("buffers", kept.get("buffers"))) if n is not None]
    reads = kept.get("recorded_reads")
    if isinstance(nbytes, int):
        row("kept", f"{human_size(nbytes)} of guest memory in {runs} runs"
            + (f": {', '.join(parts)}" if parts else "")
            + (f"; {reads} recorded reads" if reads is not None else ""))
    summary = (info.get("summary") or "").splitlines()
    source = next((s.split(":", 1)[1].strip() for s in summary
                   if s.startswith("QEMU state from:")), None)
    state = {"core": "the origin's QEMU core (embedded)", "log": "the QMP log (embedded)",
             "core+log": "the origin's QEMU core (embedded), the log compared",
             "nothing": "none (rings carved from guest RAM)"}.get(source or "", source)
    row("QEMU state", state if state else "embedded" if info.get("qemu_state") else "none")
    if info.get("findings") is not None:
        row("findings", info["findings"])
    devices = [s for s in summary[1:] if not s.startswith(("QEMU state from:", "note: ",
                                                           "left out: "))]
    if devices:
        row("devices", sum(1 for s in devices if not s.startswith(" ")))
    idle = 0

    def flush_idle() -> None:
        nonlocal idle
        if idle:
            lines.extend(wrap_units([f"+{idle}", *phrases("never-used queue(s) not shown "
                                                          "(--json has the bundle's summary)")],
                                    width, 4, 6))
        idle = 0

    for s in devices:
        if not s.startswith(" "):
            flush_idle()
            path, _, rest = s.partition("  ")           # "PATH  NAME  status 0x0f"
            name, _, rest = rest.partition("  ")
            lines.extend(wrap_units([name, path, *rest.split("  ")], width, 2, 4, "  "))
            continue
        m = _SUMMARY_QUEUE.match(s)
        unread = re.match(r"  queue (\d+): num (\S+)  \((.*)\)$", s)
        if m is None and unread is not None:
            lines.extend(wrap_units([f"q{unread[1]} size {unread[2]}", f"({unread[3]})"],
                                    width, 4, 6, "  "))
            continue
        if m is None:
            lines.extend(wrap_units(phrases(s.strip()), width, 4, 6))
            continue
        qn, num, avail, used, last, pending, inflight = m.groups()
        if avail == used == "0" and pending == "0" and inflight == "0":
            idle += 1
            continue
        lines.extend(wrap_units([f"q{qn} size {num}", f"avail {avail} used {used} last {last}",
                                 f"pending {pending} inflight {inflight}"], width, 4, 6, "  "))
    flush_idle()
    for s in summary:
        if s.startswith(("note: ", "left out: ")):
            key, _, text = s.partition(": ")
            row(key, text)
