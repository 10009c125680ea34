"""``vdecode info``: what a dump holds, as text for people or JSON for scripts.

Renders :attr:`vdecode.space.dump.Dump.info`, the facts each reader gathered when it opened the
file. Keys a reader does not provide are left out of the text.
"""

from __future__ import annotations

import json
from typing import Any

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


def render_info_text(info: dict[str, Any]) -> str:
    """The info dict as aligned ``key: value`` lines, RAM ranges and vCPUs as tables."""
    lines: list[str] = []

    def row(key: str, value: object) -> None:
        lines.append(f"{key + ':':<13} {value}")

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
            regs = "  ".join(f"{k}={cpu[k]:#x}" if k != "pid" else f"pid={cpu[k]}"
                             for k in _REG_ORDER if k in cpu)
            lines.append(f"  {cpu['index']}: {', '.join(cpu['notes'])}" + (f"  {regs}" if regs else ""))
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
    other = [n for n in info.get("notes", []) if n["name"] != "QEMU"]
    if other:
        row("other notes", ", ".join(f"{n['name']}/{n['type']:#x} ({n['size']} bytes)" for n in other))
    shown = {"file", "decompressed_to", "format", "machine", "elf_class", "endianness",
             "program_headers", "pn_xnum", "pt_load", "ram_ranges", "ram_bytes", "pages",
             "page_size", "vcpus", "vmcoreinfo", "notes", "file_size", "smbios", *_CORE_KEYS}
    for key, value in info.items():          # facts other readers add (kdump header fields, ...)
        if key in shown:
            continue
        if isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in value.items() if v not in ("", None))
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "none"
        row(key.replace("_", " "), "none" if value is None else value)
    return "\n".join(lines) + "\n"


_CORE_KEYS = ("core_writer", "signal", "threads", "crashing_thread", "pid", "command", "binary",
              "build_id", "binary_file", "qemu_version", "package", "qemu_version_from",
              "guest_ram", "guest_dump", "absent_mappings", "ram_blocks", "checks_skipped",
              "warnings", "profile", "profile_reason")
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
        row("binary", f"{info['binary']}, build-id {info.get('build_id') or 'unknown'}")
    if info.get("binary_file"):
        row("binary file", info["binary_file"])
    if info.get("qemu_version"):
        from_ = f" (from the {info['qemu_version_from']})" if info.get("qemu_version_from") else ""
        row("QEMU", f"{info['qemu_version']} {info.get('package') or ''}".rstrip() + from_)
    if info.get("profile"):
        why = f" ({info['profile_reason']})" if info.get("profile_reason") else ""
        row("profile", f"{info['profile']}{why}")
    if "guest_ram" in info:
        row("guest RAM", info["guest_ram"])
    absent = info.get("absent_mappings") or []
    if absent:
        total = sum(a["bytes"] for a in absent)
        row("left out", f"{human_size(total)} in {sum(a['mappings'] for a in absent)} mappings "
                        f"(FileSiz 0)")
        for a in absent[:MAX_ABSENT]:
            src = "  (read from the binary)" if a.get("from_binary") else ""
            lines.append(f"  {human_size(a['bytes']):>10}  {a['mappings']:>3}  {a['file']}{src}")
        if len(absent) > MAX_ABSENT:
            lines.append(f"  ... {len(absent) - MAX_ABSENT} more files (--json lists them all)")
    for c in info.get("checks_skipped") or []:
        row("skipped", c)
    for w in info.get("warnings") or []:
        row("warning", w)

